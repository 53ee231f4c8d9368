"""Answer normalization and accuracy of the VQA family (VQAv2, VizWiz, TextVQA).

Three procedures, each reproduced with its upstream quirks because published numbers depend on them:

* :func:`evalai_process` — the EvalAI answer processor (pythia / mmf), which LLaVA applies to
  predictions before uploading them to the VQAv2 / VizWiz servers and which the TextVQA (m4c) scorer
  applies to predictions and ground truth alike.
* :func:`vqa_accuracy` — the official VQA evaluator run by the EvalAI servers: it normalizes with
  :func:`process_punctuation` + :func:`process_digit_article` only when the ground-truth answers are
  not all identical, and otherwise compares raw (stripped) strings, case-sensitively.
* :func:`vizwiz_accuracy` — the VizWiz evaluator: prediction always normalized, ground truth as given.
* :func:`m4c_accuracy` — TextVQA's m4c evaluator: exactly 10 answers, everything EvalAI-processed.

Both accuracies are the leave-one-out mean over the ground-truth answers of
``min(1, matches among the other answers / 3)`` (:func:`leave_one_out_accuracy`).

Quirks kept for parity:

* Punctuation: each of the 21 characters in :data:`PUNCTUATION` is deleted if it is followed or
  preceded by a space anywhere in the text *given to the step* (not the progressively edited one), or
  if that text contains a comma between digits; otherwise it becomes a space.
* Periods: upstream's ``(?!<=\\d)(\\.)(?!\\d)`` was meant as a look-behind but is a look-ahead that can
  never match at a ``.``; the rule it implements is "delete a period not followed by a digit". Its
  ``re.UNICODE`` flag lands in ``sub``'s ``count`` argument, so at most 32 periods are deleted.
* ``'`` and ``:`` are untouched; contraction keys with capitals (``Im``, ``Ive``...) can never match
  because the words were lower-cased first.
"""

from __future__ import annotations

import math
import re

# Apostrophe-less forms and their apostrophe forms, as in the official VQA evaluator (120 entries,
# including upstream oddities such as "somebody'd" -> "somebodyd" and the capitalised keys).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Processed in this order; each is either deleted or replaced by a space.
PUNCTUATION: tuple[str, ...] = tuple(';/[]"{}()=+\\_-><@`,?!')

MAX_PERIODS_REMOVED = 32  # upstream passes re.UNICODE (== 32) as re.sub's count

_DIGIT_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

ACCURACY_LEVELS: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9, 1.0)


def process_punctuation(text: str) -> str:
    """The punctuation step shared by the EvalAI processor and the official VQA evaluator."""
    out = text
    strip_all = _DIGIT_COMMA.search(text) is not None
    for p in PUNCTUATION:
        if strip_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contractions."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def evalai_process(answer: str) -> str:
    """The EvalAI answer processor (what LLaVA uploads, and what the TextVQA scorer compares)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_normalize(answer: str) -> str:
    """The official VQA evaluator's normalization (no early lower-casing, commas or ``'s`` split)."""
    return process_digit_article(process_punctuation(answer))


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def leave_one_out_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Mean over each ground-truth answer of ``min(1, matches among the other answers / 3)``."""
    if not gt_answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer")
    matches = sum(1 for g in gt_answers if g == prediction)
    total = math.fsum(min(1.0, (matches - (g == prediction)) / 3) for g in gt_answers)
    return total / len(gt_answers)


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Accuracy (0..1) of one question as the official VQA evaluator (EvalAI server) computes it.

    The prediction is expected to be what was uploaded, i.e. already :func:`evalai_process`-ed.
    """
    gts = [_clean_whitespace(g) for g in gt_answers]
    pred = _clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [vqa_normalize(g) for g in gts]
        pred = vqa_normalize(pred)
    return leave_one_out_accuracy(pred, gts)


def vizwiz_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Accuracy (0..1) of one question as the VizWiz evaluator computes it.

    Unlike the VQA evaluator it always normalizes the prediction (:func:`vqa_normalize`) and never the
    ground truth, which is compared as given. (Its contraction table uses curly apostrophes; that
    cannot matter for uploads, which are already :func:`evalai_process`-ed.)
    """
    return leave_one_out_accuracy(vqa_normalize(_clean_whitespace(prediction)), list(gt_answers))


def m4c_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Accuracy (0..1) of one TextVQA question as the m4c evaluator computes it (10 answers)."""
    if len(gt_answers) != 10:
        raise ValueError(f"the m4c evaluator needs exactly 10 ground-truth answers, got {len(gt_answers)}")
    return leave_one_out_accuracy(evalai_process(prediction), [evalai_process(g) for g in gt_answers])


def accuracy_percent(value: float) -> float:
    """Per-question and overall accuracies are reported as ``round(100 * acc, 2)`` upstream."""
    return round(100 * value, 2)
