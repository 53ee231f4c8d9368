"""Benchmark scoring: the official test vectors and small hand-written answer sets per benchmark."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks import (
    BENCHMARK_NAMES,
    REGISTRY,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    UnknownBenchmarkError,
    get_benchmark,
    load_answer_file,
    map_llava_answers,
)
from benchmarks.base import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX, STATUS_SUBMISSION, STATUS_UNGRADED
from benchmarks.mmvet_judge import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    GRADER_PROMPT,
    RETRY_SUFFIX,
    JudgeError,
    MMVetJudge,
    grading_prompt,
    parse_judge_score,
)
from benchmarks.normalize import evalai_process, m4c_accuracy, vizwiz_accuracy, vqa_accuracy
from benchmarks.tasks.mmbench import extract_choice
from benchmarks.tasks.mme import parse_mme
from benchmarks.tasks.pope import parse_pope
from benchmarks.tasks.scienceqa import parse_sqa
from benchmarks.tasks.textvqa import question_from_prompt

# ---------------------------------------------------------------------------------------------
# Official test vectors (shared/reference/benchmarks.md)
# ---------------------------------------------------------------------------------------------

EVALAI_VECTORS = [
    ("Yes.", "yes"),
    ("Two", "2"),
    ("The dog.", "dog"),
    ("3.5", "3.5"),
    ("1,000", "1000"),
    ("1,2 and 3", "12 and 3"),
    ("a man's hat", "man 's hat"),
    ("What's up?", "what 's up"),
    ("hot-dog", "hot dog"),
    ("(a)b", "b"),
    ("U.S.A.", "usa"),
    ("end.end.", "endend"),
    ("8.00.", "8.00"),
    ("dont", "don't"),
    ("Im", "im"),
    ("one hundred", "1 hundred"),
    ("10:30", "10:30"),
]


@pytest.mark.parametrize(("raw", "expected"), EVALAI_VECTORS)
def test_evalai_processor_vectors(raw, expected):
    assert evalai_process(raw) == expected


@pytest.mark.parametrize(
    ("prediction", "gts", "official", "m4c"),
    [
        ("Yes", ["yes"] * 10, 0.0, 1.0),
        ("2", ["2"] * 3 + ["3"] * 7, 0.9, 0.9),
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6, 0.6),
        ("The dog.", ["dog"] * 5 + ["a dog"] * 5, 1.0, 1.0),
    ],
)
def test_official_vqa_vs_m4c_vectors(prediction, gts, official, m4c):
    assert vqa_accuracy(prediction, gts) == pytest.approx(official)
    assert m4c_accuracy(prediction, gts) == pytest.approx(m4c)


def test_vizwiz_evaluator_never_normalizes_ground_truth():
    gts = ["Dog"] * 3 + ["cat"] * 7
    assert vqa_accuracy("dog", gts) == pytest.approx(0.9)  # VQA: mixed answers, both sides normalized
    assert vizwiz_accuracy("dog", gts) == 0.0  # VizWiz: ground truth compared as given
    assert vizwiz_accuracy("The Cat.", gts) == 1.0  # the prediction is always normalized
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0 and vizwiz_accuracy("Yes", ["yes"] * 10) == 1.0


def test_m4c_needs_exactly_ten_answers():
    with pytest.raises(ValueError, match="exactly 10"):
        m4c_accuracy("a", ["a"] * 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No.", "no"),
        ("NO", "yes"),
        ("Not sure", "yes"),
        ("Yes, there is.", "yes"),
        ("There is no dog.", "no"),
        ("I do not know", "no"),
        ("", "yes"),
        ("Yes. No.", "yes"),
    ],
)
def test_pope_parse_vectors(text, expected):
    assert parse_pope(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("No, it is not.", "no"),
        ("Not sure", "no"),
        ("know", "no"),
        ("There is no dog", "other"),
        ("Y", "other"),
    ],
)
def test_mme_parse_vectors(text, expected):
    assert parse_mme(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B. apostrophe", "B"),
        ("The answer is C.", "C"),
        ("B.", "FAILED"),
        ("The answer is C", "FAILED"),
        ("b", "FAILED"),
        ("(B)", "FAILED"),
        ("A. x The answer is B.", "A"),
    ],
)
def test_sqa_parse_vectors(text, expected):
    assert parse_sqa(text) == expected


# ---------------------------------------------------------------------------------------------
# Registry, result objects, import hygiene
# ---------------------------------------------------------------------------------------------


def test_registry_resolves_every_benchmark():
    assert BENCHMARK_NAMES == ("vqav2", "gqa", "vizwiz", "sqa", "textvqa", "pope", "mme", "mmbench", "mmvet")
    for name in REGISTRY:
        bench = get_benchmark(name)
        assert bench.name == name
        assert bench.headline_name
        assert isinstance(bench.image_dir(Path("/r")), Path)


def test_unknown_benchmark_is_a_one_line_value_error():
    with pytest.raises(UnknownBenchmarkError) as info:
        get_benchmark("vqa3")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message and "'vqa3'" in message
    assert all(name in message for name in BENCHMARK_NAMES)


def test_benchmark_options_reach_the_constructor():
    assert get_benchmark("vqav2", split="val2014").split == "val2014"
    with pytest.raises(BenchmarkDataError, match="unknown VQAv2 split"):
        get_benchmark("vqav2", split="test-std")


def test_importing_benchmarks_never_imports_torch():
    modules = ", ".join(REGISTRY[n].split(":")[0] for n in BENCHMARK_NAMES)
    code = (
        f"import sys, benchmarks, benchmarks.mmvet_judge, {modules}\n"
        "bad = [m for m in ('torch', 'transformers', 'impvlm', 'httpx', 'openpyxl') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_result_round_trips_through_json():
    result = BenchmarkResult(
        "pope", "f1", 81.5, {"a/f1": 81.5}, [SampleScore("1", "yes", 1.0)], "n", info={"x": 1}
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["samples"] == [{"qid": "1", "parsed": "yes", "score": 1.0}]
    assert BenchmarkResult.from_dict(data) == result


def test_answer_file_skips_unparsable_lines(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        json.dumps({"question_id": 1, "text": "yes"}),
        "{not json",
        json.dumps({"text": "no id"}),
        "",
        json.dumps({"question_id": "q2", "text": "two"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    answers, bad = load_answer_file(path)
    assert answers == {"1": "yes", "q2": "two"}
    assert bad == 2


def test_missing_question_file_names_the_file(tmp_path):
    for name in BENCHMARK_NAMES:
        with pytest.raises(BenchmarkDataError) as info:
            get_benchmark(name).load(tmp_path)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path) in message, (name, message)


# ---------------------------------------------------------------------------------------------
# Helpers to write small benchmark folders
# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def short(text: str) -> str:
    return f"{text}\n{SHORT_ANSWER_SUFFIX}"


# ---------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------


def make_pope(root: Path) -> None:
    labels = {
        "adversarial": ["yes", "no", "yes", "no"],
        "popular": ["yes", "yes", "no", "no"],
        "random": ["no", "yes"],
    }
    questions, qid = [], 1
    for split, split_labels in labels.items():
        records = []
        for i, label in enumerate(split_labels):
            text = f"Is there a thing{i} in the image?"
            questions.append(
                {"question_id": qid, "image": f"{split}{i}.jpg", "text": short(text), "category": split}
            )
            records.append({"question_id": i + 1, "image": f"{split}{i}.jpg", "text": text, "label": label})
            qid += 1
        write_jsonl(root / "pope" / "coco" / f"coco_pope_{split}.json", records)
    write_jsonl(root / "pope" / "llava_pope_test.jsonl", questions)


def test_pope_scores_per_split_and_guards_no_yes(tmp_path):
    make_pope(tmp_path)
    bench = get_benchmark("pope")
    questions = bench.load(tmp_path)
    assert bench.image_dir(tmp_path) == tmp_path / "pope" / "val2014"
    replies = {
        # adversarial: labels yes,no,yes,no -> TP, FP, FN, TN
        "1": "Yes, there is.",
        "2": "Yes",
        "3": "No.",
        "4": "There is no thing.",
        # popular: nothing predicted yes (the official script divides by zero here)
        "5": "No",
        "6": "I do not know",
        "7": "no",
        "8": "No.",
        # random: labels no,yes -> FP, TP
        "9": "Yes.",
        "10": "",
    }
    result = bench.score(tmp_path, replies, questions)
    m = result.metrics
    assert (m["adversarial/tp"], m["adversarial/fp"], m["adversarial/tn"], m["adversarial/fn"]) == (
        1,
        1,
        1,
        1,
    )
    assert m["adversarial/f1"] == pytest.approx(50.0)
    assert m["adversarial/yes_ratio"] == pytest.approx(50.0)
    assert m["popular/precision"] == 0.0 and m["popular/f1"] == 0.0 and m["popular/accuracy"] == 50.0
    assert m["random/precision"] == pytest.approx(50.0) and m["random/recall"] == 100.0
    assert m["random/f1"] == pytest.approx(200 / 3)
    assert result.headline == pytest.approx((50.0 + 0.0 + 200 / 3) / 3)
    assert [s.parsed for s in result.samples[:4]] == ["yes", "yes", "no", "no"]
    assert [s.score for s in result.samples[:4]] == [1.0, 0.0, 0.0, 1.0]


def test_pope_subset_of_splits_is_noted(tmp_path):
    make_pope(tmp_path)
    bench = get_benchmark("pope")
    questions = [q for q in bench.load(tmp_path) if q.category == "random"]
    result = bench.score(tmp_path, {"9": "No", "10": "Yes"}, questions)
    assert result.headline == 100.0
    assert "missing: adversarial, popular" in result.note


# ---------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------


def make_mme(root: Path) -> None:
    bench_dir = root / "MME" / "MME_Benchmark_release_version"
    qa = [
        # (category, image path, [(question, answer)]), artwork uses the images/ + questions_answers_YN layout
        ("artwork", "artwork/images/1.jpg", [("Is this a painting?", "Yes"), ("Is this a sculpture?", "No")]),
        ("artwork", "artwork/images/2.jpg", [("Is it by Monet?", "No"), ("Is it by Manet?", "Yes")]),
        ("existence", "existence/0001.jpg", [("Is there a dog?", "Yes"), ("Is there a cat?", "No")]),
        (
            "code_reasoning",
            "code_reasoning/0002.png",
            [("Is the output 7?", "Yes"), ("Is the output 8?", "No")],
        ),
    ]
    questions = []
    for category, image, pairs in qa:
        stem = image.split("/")[-1].split(".")[0]
        if "/images/" in image:
            gt = bench_dir / category / "questions_answers_YN" / f"{stem}.txt"
        else:
            gt = bench_dir / category / f"{stem}.txt"
        gt.parent.mkdir(parents=True, exist_ok=True)
        # the second question uses the double-space variant seen in some official files
        gt.write_text(
            f"{pairs[0][0]} Please answer yes or no.\t{pairs[0][1]}\n{pairs[1][0]}  Please answer yes or no.\t{pairs[1][1]}\n"
        )
        for question, _ in pairs:
            questions.append(
                {"question_id": image, "image": image, "text": short(question), "category": category}
            )
    write_jsonl(root / "MME" / "llava_mme.jsonl", questions)


def test_mme_acc_plus_and_totals(tmp_path):
    make_mme(tmp_path)
    bench = get_benchmark("mme")
    questions = bench.load(tmp_path)
    assert [q.qid for q in questions[:2]] == ["artwork/images/1.jpg#0", "artwork/images/1.jpg#1"]
    replies = {
        "artwork/images/1.jpg#0": "Yes",
        "artwork/images/1.jpg#1": "No",  # image 1 both right
        "artwork/images/2.jpg#0": "No",
        "artwork/images/2.jpg#1": "Maybe",  # "other": image 2 half right
        "existence/0001.jpg#0": "yes, there is",
        "existence/0001.jpg#1": "Not at all",  # both right
        "code_reasoning/0002.png#0": "No",
        "code_reasoning/0002.png#1": "Yes",  # both wrong
    }
    result = bench.score(tmp_path, replies, questions)
    m = result.metrics
    assert m["artwork/acc"] == pytest.approx(75.0)
    assert m["artwork/acc_plus"] == pytest.approx(50.0)
    assert m["artwork/score"] == pytest.approx(125.0)
    assert m["artwork/other"] == 1.0
    assert m["existence/score"] == pytest.approx(200.0)
    assert m["code_reasoning/score"] == 0.0
    assert result.headline == pytest.approx(325.0) == m["perception"]
    assert m["cognition"] == 0.0
    assert "2 of 10 subtasks" in result.note
    assert [s.parsed for s in result.samples][:4] == ["yes", "no", "no", "other"]


def test_llava_answer_file_maps_repeated_ids_in_order(tmp_path):
    make_mme(tmp_path)
    questions = get_benchmark("mme").load(tmp_path)
    path = tmp_path / "llava-answers.jsonl"
    records = [
        {"question_id": q.meta["question_id"], "prompt": q.text, "text": f"a{i}"}
        for i, q in enumerate(questions)
    ]
    write_jsonl(path, [*records, {"question_id": "nowhere/1.png", "text": "x"}])
    path.write_text(path.read_text() + "{broken\n")
    answers, skipped = map_llava_answers(path, questions)
    assert answers == {q.qid: f"a{i}" for i, q in enumerate(questions)}
    assert skipped == 2


def test_mme_missing_ground_truth_names_the_file(tmp_path):
    make_mme(tmp_path)
    bench = get_benchmark("mme")
    questions = bench.load(tmp_path)
    (tmp_path / "MME/MME_Benchmark_release_version/existence/0001.txt").unlink()
    with pytest.raises(BenchmarkDataError, match="existence/0001.txt"):
        bench.score(tmp_path, {}, questions)


# ---------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------


def make_sqa(root: Path) -> None:
    problems = {
        "1": {"choices": ["cat", "dog"], "answer": 1, "image": "image.png"},
        "2": {"choices": ["x", "y", "z"], "answer": 2, "image": "image.png"},
        "3": {"choices": ["a", "b"], "answer": 0, "image": None},
        "4": {"choices": ["p", "q"], "answer": 0, "image": "image.png"},
        "5": {"choices": ["u", "v", "w", "t"], "answer": 3, "image": None},
    }
    records = []
    for pid, prob in problems.items():
        options = "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(prob["choices"]))
        value = f"Question {pid}?\n{options}"
        record = {
            "id": pid,
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "A"}],
        }
        if prob["image"]:
            record["image"] = f"{pid}/image.png"
            record["conversations"][0]["value"] = "<image>\n" + value
        records.append(record)
    write_json(root / "scienceqa" / "llava_test_CQM-A.json", records)
    write_json(root / "scienceqa" / "problems.json", problems)
    write_json(root / "scienceqa" / "pid_splits.json", {"test": list(problems)})


def test_sqa_img_subset(tmp_path):
    make_sqa(tmp_path)
    bench = get_benchmark("sqa")
    questions = bench.load(tmp_path)
    assert [q.image for q in questions] == ["1/image.png", "2/image.png", None, "4/image.png", None]
    assert questions[0].text == f"Question 1?\nA. cat\nB. dog\n{MULTIPLE_CHOICE_SUFFIX}"
    assert questions[0].max_new_tokens == 1024
    replies = {
        "1": "B",  # right (IMG)
        "2": "The answer is C.",  # right (IMG)
        "3": "A. a",  # right (TXT)
        "4": "C",  # beyond the 2 choices: wrong (IMG)
        # "5" missing: FAILED (TXT)
    }
    result = bench.score(tmp_path, replies, questions)
    assert result.headline == pytest.approx(200 / 3)
    assert result.metrics["accuracy"] == pytest.approx(60.0)
    assert result.metrics["n_img"] == 3 and result.metrics["failed"] == 1
    assert [s.parsed for s in result.samples] == ["B", "C", "A", "C", "FAILED"]
    assert result.note == ""


def test_sqa_without_problems_json_uses_the_question_file(tmp_path):
    make_sqa(tmp_path)
    (tmp_path / "scienceqa" / "problems.json").unlink()
    bench = get_benchmark("sqa")
    questions = bench.load(tmp_path)
    result = bench.score(tmp_path, {q.qid: "A" for q in questions}, questions)  # gpt turn says "A" for all
    assert result.headline == 100.0
    assert "problems.json absent" in result.note


# ---------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------

MMB_COLUMNS = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]


def make_mmbench(root: Path, with_answers: bool = True) -> Path:
    image = base64.b64encode(b"not really a png").decode()
    base = [
        # index, question, hint, options, answer, category
        (1, "What is shown?", "A hint.", ["cat", "dog", "bird", "nan"], "B", "animals"),
        (2, "Which color?", "nan", ["red", "green", "", ""], "A", "colors"),
    ]
    rows = []
    for index, question, hint, options, answer, category in base:
        n = sum(1 for o in options if o not in ("", "nan"))
        for k in range(n):  # rotated copies: options shifted, answer follows its option
            shifted = options[:n][k:] + options[:n][:k]
            letter = "ABCD"[(ord(answer) - 65 - k) % n]
            row = [
                index + k * 1_000_000,
                question,
                hint,
                *(shifted + ["nan"] * (4 - n)),
                letter if with_answers else "",
            ]
            rows.append([*row, category, image, "src", "l2", "nan", "dev"])
    path = root / "mmbench" / "mmbench_dev_20230712.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(MMB_COLUMNS)
        writer.writerows(rows)
    return path


def test_mmbench_prompt_and_options(tmp_path):
    make_mmbench(tmp_path)
    questions = get_benchmark("mmbench").load(tmp_path)
    assert [q.qid for q in questions] == ["1", "1000001", "2000001", "2", "1000002"]
    first = questions[0]
    assert first.text == f"A hint.\nWhat is shown?\nA. cat\nB. dog\nC. bird\n{MULTIPLE_CHOICE_SUFFIX}"
    assert first.image is None and first.image_bytes == b"not really a png"
    assert first.meta["options"] == {"A": "cat", "B": "dog", "C": "bird"}
    assert questions[3].text == f"Which color?\nA. red\nB. green\n{MULTIPLE_CHOICE_SUFFIX}"
    assert questions[1].meta["answer"] == "A" and questions[2].meta["answer"] == "C"


def test_mmbench_extraction():
    options = {"A": "cat", "B": "dog", "C": "bird"}
    assert extract_choice("B", options) == "B"
    assert extract_choice("(C) bird.", options) == "C"
    assert extract_choice("The answer is A", options) == "A"
    assert extract_choice("It is a dog", options) == "B"  # no letter word, unique option text
    assert extract_choice("A or B", options) is None
    assert extract_choice("a dog or a cat", options) is None
    assert extract_choice("D", options) is None  # not an option of this question


def test_mmbench_circular_accuracy_with_rotations(tmp_path):
    make_mmbench(tmp_path)
    bench = get_benchmark("mmbench")
    questions = bench.load(tmp_path)
    replies = {
        # question 1: right in every rotation -> circular right
        "1": "B",
        "1000001": "A. dog",
        "2000001": "It is a dog.",
        # question 2: wrong in one rotation -> circular wrong
        "2": "A",
        "1000002": "A",
    }
    result = bench.score(tmp_path, replies, questions)
    assert result.headline == 50.0
    assert result.metrics["vanilla_accuracy"] == pytest.approx(80.0)
    assert result.metrics["questions"] == 2 and result.metrics["rows"] == 5
    assert result.metrics["category/animals"] == 100.0 and result.metrics["category/colors"] == 0.0
    assert [s.parsed for s in result.samples] == ["B", "A", "C", "A", "A"]


def test_mmbench_submission_xlsx(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    make_mmbench(tmp_path, with_answers=False)
    bench = get_benchmark("mmbench")
    questions = bench.load(tmp_path)
    result = bench.score(tmp_path, {"1": "B"}, questions)
    assert result.headline is None and result.status == STATUS_SUBMISSION
    (path,) = bench.write_submission(tmp_path, {"1": "B", "2": "None"}, questions, tmp_path / "upload")
    assert path.name == "mmbench_dev_20230712.xlsx"
    rows = list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))
    assert rows[0] == ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
    assert rows[1] == (1, "What is shown?", "cat", "dog", "bird", None, "B", None, "dev")
    assert rows[4] == (2, "Which color?", "red", "green", None, None, "None", None, "dev")
    assert len(rows) == 6


# ---------------------------------------------------------------------------------------------
# GQA, TextVQA
# ---------------------------------------------------------------------------------------------


def make_gqa(root: Path) -> None:
    questions = [
        {"question_id": "q1", "image": "n1.jpg", "text": short("Is it overcast?"), "category": "default"},
        {
            "question_id": "q2",
            "image": "n2.jpg",
            "text": short("Who wears the dress?"),
            "category": "default",
        },
        {"question_id": "q3", "image": "n2.jpg", "text": short("What color is it?"), "category": "default"},
    ]
    write_jsonl(root / "gqa" / "llava_gqa_testdev_balanced.jsonl", questions)
    annotations = {
        "q1": {"answer": "no", "isBalanced": True, "types": {"structural": "verify", "semantic": "attr"}},
        "q2": {"answer": "woman", "isBalanced": True, "types": {"structural": "query", "semantic": "rel"}},
        "q3": {"answer": "white", "isBalanced": True, "types": {"structural": "query", "semantic": "attr"}},
    }
    write_json(root / "gqa" / "data" / "testdev_balanced_questions.json", annotations)


def test_gqa_exact_match_binary_open(tmp_path):
    make_gqa(tmp_path)
    bench = get_benchmark("gqa")
    questions = bench.load(tmp_path)
    assert bench.image_dir(tmp_path) == tmp_path / "gqa" / "data" / "images"
    replies = {"q1": "No.", "q2": "Woman", "q3": "white."}
    result = bench.score(tmp_path, {**replies, "q3": "White dress"}, questions)
    assert result.metrics["binary"] == 100.0 and result.metrics["open"] == 50.0
    assert result.headline == pytest.approx(200 / 3)
    assert result.metrics["structural/query"] == 50.0
    assert [s.parsed for s in result.samples] == ["no", "woman", "white dress"]
    (path,) = bench.write_submission(tmp_path, replies, questions, tmp_path / "out")
    assert json.loads(path.read_text()) == [
        {"questionId": "q1", "prediction": "no"},
        {"questionId": "q2", "prediction": "woman"},
        {"questionId": "q3", "prediction": "white"},
    ]
    with pytest.raises(BenchmarkDataError, match="no prediction for 1 question"):
        bench.score(tmp_path, {"q1": "no", "q2": "woman"}, questions)


def test_textvqa_m4c_scoring(tmp_path):
    root = tmp_path
    questions = [
        {
            "question_id": "img1",
            "image": "img1.jpg",
            "text": f"What brand?\nReference OCR token: DAKOTA, Camera\n{SHORT_ANSWER_SUFFIX}",
            "category": "default",
        },
        {
            "question_id": "img1",
            "image": "img1.jpg",
            "text": f"What Year?\nReference OCR token: 1999\n{SHORT_ANSWER_SUFFIX}",
            "category": "default",
        },
    ]
    write_jsonl(root / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl", questions)
    bench = get_benchmark("textvqa")
    loaded = bench.load(root)
    assert [q.qid for q in loaded] == ["img1#0", "img1#1"]
    with pytest.raises(BenchmarkDataError, match="TextVQA_0.5.1_val.json"):
        bench.score(root, {}, loaded)
    data = [
        {"image_id": "img1", "question": "What brand?", "answers": ["Dakota"] * 2 + ["kodak"] * 8},
        {"image_id": "img1", "question": "what year?", "answers": ["1999"] * 10},
    ]
    write_json(root / "textvqa" / "TextVQA_0.5.1_val.json", {"data": data})
    result = bench.score(root, {"img1#0": "DAKOTA.", "img1#1": "1999"}, loaded)
    assert [s.score for s in result.samples] == pytest.approx([0.6, 1.0])
    assert result.headline == pytest.approx(80.0)


def test_textvqa_question_extraction():
    assert question_from_prompt("Q?\nReference OCR token: a, b\nAnswer briefly.") == "q?"
    assert question_from_prompt("Reference OCR token: a\nQ?\nAnswer.") == "q?"
    assert question_from_prompt("Q?\nAnswer.") == "q?"
    assert question_from_prompt("OCR tokens: a b Question: Why? Short answer:") == "why?"
    assert question_from_prompt("just one line") is None


# ---------------------------------------------------------------------------------------------
# VQAv2, VizWiz (server-scored, optional local annotations)
# ---------------------------------------------------------------------------------------------


def make_vqav2(root: Path) -> None:
    asked = [
        {"question_id": 11, "image": "a.jpg", "text": short("How many?"), "category": "default"},
        {"question_id": 12, "image": "b.jpg", "text": short("Is it red?"), "category": "default"},
    ]
    write_jsonl(root / "vqav2" / "llava_vqav2_mscoco_test-dev2015.jsonl", asked)
    write_jsonl(
        root / "vqav2" / "llava_vqav2_mscoco_test2015.jsonl", [*asked, {**asked[0], "question_id": 13}]
    )


def test_vqav2_submission_without_annotations(tmp_path):
    make_vqav2(tmp_path)
    bench = get_benchmark("vqav2")
    questions = bench.load(tmp_path)
    assert bench.image_dir(tmp_path) == tmp_path / "vqav2" / "test2015"
    result = bench.score(tmp_path, {"11": "Two.", "12": "Yes"}, questions)
    assert result.headline is None and result.status == STATUS_SUBMISSION
    assert "EvalAI" in result.note and "\n" not in result.note
    assert [s.parsed for s in result.samples] == ["2", "yes"]
    (path,) = bench.write_submission(tmp_path, {"11": "Two."}, questions, tmp_path / "up")
    assert json.loads(path.read_text()) == [
        {"question_id": 11, "answer": "2"},
        {"question_id": 12, "answer": ""},
        {"question_id": 13, "answer": ""},
    ]


def test_vqav2_local_replica(tmp_path):
    make_vqav2(tmp_path)
    annotations = {
        "annotations": [
            {
                "question_id": 11,
                "answer_type": "number",
                "answers": [{"answer": a} for a in ["2"] * 3 + ["3"] * 7],
            },
            {"question_id": 12, "answer_type": "yes/no", "answers": [{"answer": "yes"}] * 10},
        ]
    }
    write_json(tmp_path / "vqav2" / "v2_mscoco_test-dev2015_annotations.json", annotations)
    bench = get_benchmark("vqav2")
    result = bench.score(tmp_path, {"11": "Two", "12": "Yes!"}, bench.load(tmp_path))
    assert result.headline == 95.0
    assert result.metrics["type/number"] == 90.0 and result.metrics["type/yes/no"] == 100.0


def test_vizwiz_submission_and_local_score(tmp_path):
    suffix = "When the provided information is insufficient, respond with 'Unanswerable'."
    questions = [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": short(f"What is this?\n{suffix}")},
        {"question_id": 1, "image": "VizWiz_test_00000001.jpg", "text": short(f"Which color?\n{suffix}")},
    ]
    write_jsonl(tmp_path / "vizwiz" / "llava_test.jsonl", questions)
    bench = get_benchmark("vizwiz")
    loaded = bench.load(tmp_path)
    result = bench.score(tmp_path, {"0": "Unanswerable", "1": "Blue"}, loaded)
    assert result.headline is None and result.status == STATUS_SUBMISSION
    with pytest.raises(BenchmarkDataError, match="1 missing, first 1"):
        bench.write_submission(tmp_path, {"0": "x"}, loaded, tmp_path / "up")
    (path,) = bench.write_submission(tmp_path, {"0": "Unanswerable", "1": "Blue."}, loaded, tmp_path / "up")
    assert json.loads(path.read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "blue"},
    ]
    annotations = [
        {
            "image": "VizWiz_test_00000000.jpg",
            "answers": [{"answer": "unanswerable"}] * 10,
            "answer_type": "unanswerable",
        },
        {"image": "VizWiz_test_00000001.jpg", "answers": [{"answer": "blue"}] + [{"answer": "navy"}] * 9},
    ]
    write_json(tmp_path / "vizwiz" / "Annotations" / "test.json", annotations)
    result = bench.score(tmp_path, {"0": "Unanswerable", "1": "Blue"}, loaded)
    assert [s.score for s in result.samples] == pytest.approx([1.0, 0.3])  # 1 of 10 annotators said blue
    assert result.headline == 65.0


# ---------------------------------------------------------------------------------------------
# MM-Vet and its judge (a real HTTP server on localhost speaking the chat-completions protocol)
# ---------------------------------------------------------------------------------------------


class ScriptedJudgeServer:
    """An OpenAI-compatible endpoint answering with scripted replies; records every request."""

    def __init__(self, replies: list, model: str = "judge-test-1"):
        self.replies = list(replies)
        self.requests: list[dict] = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_self.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                )
                reply = server_self.replies.pop(0) if server_self.replies else "1.0"
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                data = json.dumps(
                    {"model": model, "choices": [{"message": {"role": "assistant", "content": reply}}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_judge_prompt_and_score_parsing():
    prompt = grading_prompt("What is x?", "-1<AND>-5", "x = 3")
    assert prompt == GRADER_PROMPT + "\nWhat is x? | -1 <AND> -5 | x = 3 | "
    assert grading_prompt("q", "a", "p", retry=True).endswith(RETRY_SUFFIX)
    assert GRADER_PROMPT.startswith("Compare the ground truth and prediction from AI models")
    assert parse_judge_score("0.7") == 0.7
    assert parse_judge_score("1.0 because") == 1.0
    assert parse_judge_score("1.5") is None
    assert parse_judge_score("The") is None
    assert parse_judge_score("") is None


def test_judge_retries_with_higher_temperature_then_gives_zero():
    with (
        ScriptedJudgeServer(["The", "zero", "-1", "0.6"]) as server,
        MMVetJudge(server.url, "judge-test", api_key="sk-test", backoff=0) as judge,
    ):
        grade = judge.grade("What is x?", "-1<AND>-5", "x = -1")
        assert grade.score == 0.6 and grade.attempts == 4 and grade.model == "judge-test-1"
        assert [r["temperature"] for r in server.requests] == [0.0, 0.0, 0.5, 1.0]
        assert all(r["max_tokens"] == 3 and r["model"] == "judge-test" for r in server.requests)
        assert server.requests[0]["path"] == "/v1/chat/completions"
        assert server.requests[0]["auth"] == "Bearer sk-test"
        assert not server.requests[0]["messages"][0]["content"].endswith(RETRY_SUFFIX)
        assert server.requests[1]["messages"][0]["content"].endswith(RETRY_SUFFIX)

        server.replies[:] = ["x"] * 10
        server.requests.clear()
        grade = judge.grade("q", "a", "p")
        assert grade.score == 0.0 and grade.attempts == 5 and len(server.requests) == 5

        server.replies[:] = [503, "0.3"]  # a transient server error is retried
        assert judge.grade("q", "a", "p").score == 0.3
        identity = judge.identity()
        assert identity["model"] == "judge-test" and identity["response_models"] == ["judge-test-1"]
        assert identity["is_official_model"] is False and "sk-test" not in json.dumps(identity)

        server.replies[:] = [401]
        with pytest.raises(JudgeError, match="HTTP 401"):
            judge.grade("q", "a", "p")


def make_mmvet(root: Path) -> list[dict]:
    questions = [
        {"image": "v1_0.png", "text": "What is x in the equation?", "category": "conv", "question_id": 0},
        {"image": "v1_1.png", "text": "What is written?", "category": "conv", "question_id": 1},
        {"image": "v1_2.png", "text": "Explain.", "category": "conv", "question_id": 2},
    ]
    write_jsonl(root / "mm-vet" / "llava-mm-vet.jsonl", questions)
    truth = {
        "v1_0": {
            "imagename": "v1_0.png",
            "capability": ["ocr", "math"],
            "question": "What is x?",
            "answer": "-1<AND>-5",
        },
        "v1_1": {
            "imagename": "v1_1.png",
            "capability": ["ocr"],
            "question": "What is written?",
            "answer": "hello",
        },
        "v1_2": {
            "imagename": "v1_2.png",
            "capability": ["rec", "gen"],
            "question": "Explain.",
            "answer": "a meme",
        },
    }
    write_json(root / "mm-vet" / "mm-vet.json", truth)
    return questions


def test_mmvet_ungraded_without_judge(tmp_path, monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)
    make_mmvet(tmp_path)
    bench = get_benchmark("mmvet")
    questions = bench.load(tmp_path)
    assert [q.max_new_tokens for q in questions] == [1024] * 3
    answers = {"0": "x = -1", "1": "hello", "2": "funny"}
    result = bench.score(tmp_path, answers, questions)
    assert result.status == STATUS_UNGRADED and result.headline is None
    assert [s.parsed for s in result.samples] == ["x = -1", "hello", "funny"]
    assert all(s.score is None for s in result.samples)
    assert ENV_BASE_URL in result.note
    (path,) = bench.write_submission(tmp_path, answers, questions, tmp_path / "res")
    assert json.loads(path.read_text()) == {"v1_0": "x = -1", "v1_1": "hello", "v1_2": "funny"}


def test_mmvet_graded_from_env_with_cache(tmp_path, monkeypatch):
    make_mmvet(tmp_path)
    answers = {"0": "x = -1", "1": "hello", "2": "funny"}
    with ScriptedJudgeServer(["0.5", "1.0", "0.0"]) as server:
        monkeypatch.setenv(ENV_BASE_URL, server.url)
        monkeypatch.setenv(ENV_MODEL, "local-judge")
        monkeypatch.delenv(ENV_API_KEY, raising=False)
        cache = tmp_path / "grades.json"
        bench = get_benchmark("mmvet", cache_path=cache)
        questions = bench.load(tmp_path)
        result = bench.score(tmp_path, answers, questions)
        assert result.headline == pytest.approx(50.0)
        assert result.metrics["ocr"] == pytest.approx(75.0)
        assert result.metrics["math"] == pytest.approx(50.0)
        assert result.metrics["rec"] == 0.0
        assert result.metrics["integration/math_ocr"] == pytest.approx(50.0)
        assert result.info["judge"]["model"] == "local-judge"
        assert result.info["judge"]["response_models"] == ["judge-test-1"]
        assert "not comparable" in result.note
        assert "What is x? | -1 <AND> -5 | x = -1 | " in server.requests[0]["messages"][0]["content"]
        assert server.requests[0]["auth"] is None
        # re-scoring reuses cached grades; a changed answer is graded again
        server.requests.clear()
        server.replies[:] = ["1.0"]
        again = get_benchmark("mmvet", cache_path=cache).score(
            tmp_path, {**answers, "2": "a meme"}, questions
        )
        assert len(server.requests) == 1
        assert again.headline == pytest.approx(100 * 2.5 / 3)


def test_question_is_frozen():
    q = Question("1", None, "t", 128)
    with pytest.raises(AttributeError):
        q.qid = "2"  # type: ignore[misc]
