"""Property tests (hypothesis) of the answer normalizers, parsers and accuracy functions."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmarks.normalize import (
    ACCURACY_LEVELS,
    PUNCTUATION,
    evalai_process,
    leave_one_out_accuracy,
    m4c_accuracy,
    process_punctuation,
    vizwiz_accuracy,
    vqa_accuracy,
    vqa_normalize,
)
from benchmarks.tasks.mmbench import extract_choice
from benchmarks.tasks.mme import parse_mme
from benchmarks.tasks.pope import binary_metrics, parse_pope
from benchmarks.tasks.scienceqa import FAILED, choice_index, parse_sqa

SETTINGS = settings(max_examples=150, deadline=None)

# Text that exercises the rules: words the tables know, punctuation, digits, periods, commas.
TOKENS = [
    "a",
    "an",
    "the",
    "The",
    "one",
    "Two",
    "none",
    "dont",
    "Im",
    "hes",
    "'s",
    "'",
    ":",
    ".",
    "..",
    ",",
    "1,000",
    "3.5",
    "dog",
    "Yes",
    "no",
    " ",
    "  ",
    "\n",
    "\t",
    *PUNCTUATION,
    *string.digits,
]
answer_text = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(TOKENS), max_size=16).map("".join))
short_answers = st.sampled_from(["dog", "a dog", "Dog.", "dogs", "2", "two", "red", "yes", "Yes", "no", ""])


@SETTINGS
@given(answer_text)
def test_normalizers_remove_every_listed_punctuation(text):
    for out in (evalai_process(text), vqa_normalize(text), process_punctuation(text)):
        assert not any(p in out for p in PUNCTUATION)


@SETTINGS
@given(answer_text)
def test_normalizer_output_is_lower_case_single_spaced(text):
    for out in (evalai_process(text), vqa_normalize(text)):
        assert not any(c in string.ascii_uppercase for c in out)
        assert out == " ".join(out.split())
        assert not set(out.split()) & {"a", "an", "the"}


@SETTINGS
@given(answer_text)
def test_normalizers_are_idempotent_without_apostrophes(text):
    # Contractions ("hes" -> "he's") and the 32-period cap are the two reasons a second pass changes
    # the text; away from them a normalized answer is a fixed point.
    assume(text.count(".") <= 32)
    for normalize in (evalai_process, vqa_normalize):
        out = normalize(text)
        assume("'" not in out)
        assert normalize(out) == out


@SETTINGS
@given(st.text(alphabet="abc .", max_size=80))
def test_at_most_32_periods_are_removed(text):
    removed = text.count(".") - process_punctuation(text).count(".")
    assert 0 <= removed <= 32


@SETTINGS
@given(st.lists(short_answers, min_size=10, max_size=10), short_answers)
def test_vqa_accuracies_take_the_five_levels(gts, prediction):
    for acc in (
        vqa_accuracy(prediction, gts),
        vizwiz_accuracy(prediction, gts),
        m4c_accuracy(prediction, gts),
    ):
        assert round(acc, 9) in ACCURACY_LEVELS


@SETTINGS
@given(st.lists(st.sampled_from(["x", "y", "z"]), min_size=10, max_size=10), st.sampled_from(["x", "y", "w"]))
def test_leave_one_out_matches_the_closed_form(gts, prediction):
    k = gts.count(prediction)
    expected = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}.get(k, 1.0)
    assert leave_one_out_accuracy(prediction, gts) == pytest.approx(expected)


@SETTINGS
@given(st.lists(short_answers, min_size=1, max_size=12), short_answers, st.randoms(use_true_random=False))
def test_vqa_accuracy_bounded_and_order_free(gts, prediction, rnd):
    acc = vqa_accuracy(prediction, gts)
    assert 0.0 <= acc <= 1.0
    shuffled = list(gts)
    rnd.shuffle(shuffled)
    assert vqa_accuracy(prediction, shuffled) == pytest.approx(acc)


@SETTINGS
@given(st.text(max_size=60))
def test_pope_parser_is_total(text):
    assert parse_pope(text) in ("yes", "no")


@SETTINGS
@given(st.text(max_size=60))
def test_mme_parser_is_total(text):
    parsed = parse_mme(text)
    assert parsed in ("yes", "no", "other")
    if text.lower().startswith("yes"):
        assert parsed == "yes"


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.sampled_from(["A", "B. x", "The answer is Q.", "E"])))
def test_sqa_parser_is_total(text):
    parsed = parse_sqa(text)
    assert parsed == FAILED or (len(parsed) == 1 and parsed in string.ascii_uppercase)
    for n in range(2, 6):
        assert -1 <= choice_index(parsed, n) < n


@SETTINGS
@given(
    st.text(max_size=60),
    st.dictionaries(st.sampled_from("ABCD"), st.text(min_size=1, max_size=8), min_size=2, max_size=4),
)
def test_mmbench_extraction_returns_an_option_or_none(text, options):
    choice = extract_choice(text, options)
    assert choice is None or choice in options
    for letter in options:
        assert extract_choice(letter, options) == letter


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["yes", "no"]), st.sampled_from(["yes", "no"])), min_size=1, max_size=50
    )
)
def test_pope_metrics_are_bounded(pairs):
    preds, labels = zip(*pairs)
    m = binary_metrics(list(preds), list(labels))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == len(pairs)
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        assert 0.0 <= m[key] <= 100.0
