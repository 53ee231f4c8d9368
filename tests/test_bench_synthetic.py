"""The synthetic nine-benchmark suite: real loaders read it, ground truth scores the maximum, files are
deterministic; and the offline exact-match MM-Vet grader."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import BENCHMARK_NAMES, BenchmarkResult, Question, get_benchmark
from benchmarks.base import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX, UNANSWERABLE_SUFFIX
from benchmarks.mmvet_judge import (
    ENV_BASE_URL,
    ENV_JUDGE,
    ENV_MODEL,
    EXACT_JUDGE_DESCRIPTION,
    ExactMatchJudge,
    JudgeError,
    MMVetJudge,
    exact_match_score,
    judge_from_env,
)
from benchmarks.synthetic import MANIFEST, write_synthetic_suite
from impvlm.data.synthetic import WorldConfig, generate_dataset, read_world
from impvlm.errors import ConfigError

N = 10


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", N, progress=False)


@pytest.fixture(autouse=True)
def exact_judge(monkeypatch):
    monkeypatch.setenv(ENV_JUDGE, "exact")


def load(root: Path, name: str) -> tuple[object, list[Question]]:
    bench = get_benchmark(name)
    return bench, bench.load(root)


def ground_truth(name: str, root: Path, questions: list[Question]) -> dict[str, str]:
    """The right answer of every question, read from the benchmark's own ground-truth files."""
    if name in ("vqav2", "vizwiz", "textvqa"):
        if name == "vqav2":
            records = json.loads((root / "vqav2/v2_mscoco_test-dev2015_annotations.json").read_text())
            by_key = {str(r["question_id"]): r["answers"] for r in records["annotations"]}
            key = lambda q: q.qid  # noqa: E731
        elif name == "vizwiz":
            records = json.loads((root / "vizwiz/Annotations/test.json").read_text())
            by_key = {r["image"]: r["answers"] for r in records}
            key = lambda q: q.image  # noqa: E731
        else:
            data = json.loads((root / "textvqa/TextVQA_0.5.1_val.json").read_text())["data"]
            by_key = {(d["image_id"], d["question"].lower()): d["answers"] for d in data}
            key = lambda q: (q.meta["question_id"], q.meta["question"])  # noqa: E731
        out = {}
        for q in questions:
            answers = [a["answer"] if isinstance(a, dict) else a for a in by_key[key(q)]]
            assert len(answers) == 10
            out[q.qid] = Counter(answers).most_common(1)[0][0]
        return out
    if name == "gqa":
        annotations = json.loads((root / "gqa/testdev_balanced_questions.json").read_text())
        return {q.qid: annotations[q.qid]["answer"] for q in questions}
    if name == "pope":
        out = {}
        for split in ("adversarial", "popular", "random"):
            lines = (root / f"pope/coco/coco_pope_{split}.json").read_text().splitlines()
            labels = [json.loads(line)["label"] for line in lines]
            for q in questions:
                if q.category == split:
                    out[q.qid] = labels[q.meta["label_index"]]
        return out
    if name == "mme":
        out = {}
        for q in questions:
            task, file_name = q.meta["question_id"].split("/")
            truth_file = root / "MME/MME_Benchmark_release_version" / task / f"{Path(file_name).stem}.txt"
            lines = dict(line.split("\t") for line in truth_file.read_text().splitlines())
            question = q.text.split("\n")[0]
            out[q.qid] = lines[f"{question} Please answer yes or no."]
        return out
    if name == "sqa":
        problems = json.loads((root / "scienceqa/problems.json").read_text())
        return {q.qid: "ABCDE"[problems[q.qid]["answer"]] for q in questions}
    if name == "mmbench":
        with open(root / "mmbench/mmbench_dev_20230712.tsv", newline="") as f:
            rows = {r["index"]: r["answer"] for r in csv.DictReader(f, delimiter="\t")}
        return {q.qid: rows[q.qid] for q in questions}
    if name == "mmvet":
        truth = json.loads((root / "mm-vet/mm-vet.json").read_text())
        return {q.qid: truth[f"v1_{q.qid}"]["answer"].split("<OR>")[-1] for q in questions}
    raise AssertionError(name)


def maximum(result: BenchmarkResult) -> float:
    if result.benchmark == "mme":
        return 200.0 * sum(1 for k in result.metrics if k.endswith("/score"))
    return 100.0


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------


def test_every_benchmark_loads_with_images_and_official_suffixes(suite):
    counts = {}
    for name in BENCHMARK_NAMES:
        bench, questions = load(suite, name)
        assert questions, name
        counts[name] = len(questions)
        for q in questions:
            if name == "mmbench":
                assert q.image is None and Image.open(__import__("io").BytesIO(q.image_bytes)).size == (
                    64,
                    64,
                )
            elif name == "sqa" and q.category == "TXT":
                assert q.image is None
            else:
                assert (bench.image_dir(suite) / q.image).is_file(), (name, q.image)
            if name in ("sqa", "mmbench"):
                assert (
                    q.text.endswith("\n" + MULTIPLE_CHOICE_SUFFIX) and "\nA. " in q.text and "\nB. " in q.text
                )
            elif name == "mmvet":
                assert "Answer" not in q.text and q.text.endswith("?")
            else:
                assert q.text.endswith("?\n" + SHORT_ANSWER_SUFFIX) or name in ("vizwiz", "textvqa"), q.text
            if name == "vizwiz":
                assert q.text.endswith(f"?\n{UNANSWERABLE_SUFFIX}\n{SHORT_ANSWER_SUFFIX}")
            if name == "textvqa":
                lines = q.text.split("\n")
                assert (
                    len(lines) == 3
                    and lines[1].startswith("Reference OCR token: ")
                    and lines[2] == SHORT_ANSWER_SUFFIX
                )
    manifest = json.loads((suite / MANIFEST).read_text())
    assert manifest["complete"] and manifest["n_images_per_benchmark"] == N
    for name in BENCHMARK_NAMES:
        assert manifest["benchmarks"][name]["questions"] == counts[name], name
    assert counts["pope"] == N * 6 * 3 and counts["mme"] == 2 * N and counts["vizwiz"] == N


def test_ground_truth_scores_the_maximum_and_wrong_answers_score_low(suite):
    for name in BENCHMARK_NAMES:
        bench, questions = load(suite, name)
        right = bench.score(suite, ground_truth(name, suite, questions), questions)
        assert right.status == "scored" and right.headline is not None, (name, right.note)
        assert right.headline == pytest.approx(maximum(right)), (name, right.headline, right.metrics)
        wrong = bench.score(suite, {q.qid: "no" if name == "pope" else "zebra" for q in questions}, questions)
        assert wrong.headline == pytest.approx(0.0), (name, wrong.headline)
        always_yes = bench.score(suite, {q.qid: "yes" for q in questions}, questions)
        assert always_yes.headline < 0.7 * maximum(right), (name, always_yes.headline)


def test_split_specific_structure(suite):
    # VQAv2 / VizWiz: the default test split and the val replica are both scored locally
    for name, split in (("vqav2", "val2014"), ("vizwiz", "val")):
        bench = get_benchmark(name, split=split)
        questions = bench.load(suite)
        default = get_benchmark(name).load(suite)
        assert [q.text for q in questions] == [q.text for q in default]
        assert all((bench.image_dir(suite) / q.image).is_file() for q in questions)
    vizwiz_truth = json.loads((suite / "vizwiz/Annotations/val.json").read_text())
    assert {r["answer_type"] for r in vizwiz_truth} >= {"other", "unanswerable"}
    # GQA reports binary and open
    bench, questions = load(suite, "gqa")
    result = bench.score(suite, ground_truth("gqa", suite, questions), questions)
    assert result.metrics["open"] == 100.0 and result.metrics["binary"] == 100.0
    # ScienceQA: the IMG subset is a strict subset
    bench, questions = load(suite, "sqa")
    result = bench.score(suite, ground_truth("sqa", suite, questions), questions)
    assert 0 < result.metrics["n_img"] < result.metrics["n"]
    assert {
        len(json.loads((suite / "scienceqa/problems.json").read_text())[q.qid]["choices"]) for q in questions
    } <= {
        2,
        3,
        4,
    }
    # POPE: balanced labels in every split, POPE's wording
    _, questions = load(suite, "pope")
    for split in ("adversarial", "popular", "random"):
        lines = (suite / f"pope/coco/coco_pope_{split}.json").read_text().splitlines()
        labels = Counter(json.loads(line)["label"] for line in lines)
        assert labels["yes"] == labels["no"] == N * 3
    assert all(q.text.startswith("Is there a") and " in the image?\n" in q.text for q in questions)
    # MME: five perception subtasks, a yes and a no question per image
    bench, questions = load(suite, "mme")
    assert {q.category for q in questions} == {"existence", "count", "position", "color", "OCR"}
    truth = ground_truth("mme", suite, questions)
    for image in {q.meta["question_id"] for q in questions}:
        assert sorted(truth[q.qid] for q in questions if q.meta["question_id"] == image) == ["No", "Yes"]
    # MMBench: every question has all its circular rotations, the answer text is the same in each
    _, questions = load(suite, "mmbench")
    groups: dict[int, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.meta["index"] % 1_000_000, []).append(q)
    assert len(groups) == N
    for copies in groups.values():
        assert len(copies) == len(copies[0].meta["options"])
        assert len({q.meta["options"][q.meta["answer"]] for q in copies}) == 1
        assert len({tuple(q.meta["options"].values()) for q in copies}) == len(copies)
    # MM-Vet: capabilities and some <OR> answers
    truth = json.loads((suite / "mm-vet/mm-vet.json").read_text())
    assert {c for entry in truth.values() for c in entry["capability"]} <= {"rec", "ocr", "spat"}
    assert any("<OR>" in entry["answer"] for entry in truth.values())


def test_mmvet_result_records_the_exact_judge(suite, monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")  # IMP_JUDGE=exact wins over an endpoint
    monkeypatch.setenv(ENV_MODEL, "some-llm")
    bench, questions = load(suite, "mmvet")
    result = bench.score(suite, ground_truth("mmvet", suite, questions), questions)
    assert result.info["judge"]["description"] == EXACT_JUDGE_DESCRIPTION
    assert result.info["judge"]["is_official_model"] is False
    assert "exact-match grader, not the official GPT-4 judge" in result.note
    assert "not comparable" in result.note


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = snapshot(write_synthetic_suite(tmp_path / "a", 4, seed=5, progress=False))
    b = snapshot(write_synthetic_suite(tmp_path / "b", 4, seed=5, progress=False))
    c = snapshot(write_synthetic_suite(tmp_path / "c", 4, seed=6, progress=False))
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    # writing again into a previous suite replaces it (stale files of a larger run disappear)
    write_synthetic_suite(tmp_path / "d", 6, seed=5, progress=False)
    assert snapshot(write_synthetic_suite(tmp_path / "d", 4, seed=5, progress=False)) == a


def test_refuses_a_foreign_folder_and_bad_arguments(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        write_synthetic_suite(tmp_path, 2, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match=">= 1"):
        write_synthetic_suite(tmp_path / "x", 0, progress=False)


def test_world_of_a_training_set_is_reused(tmp_path):
    world = WorldConfig(image_size=32, colours=("red", "green", "blue", "yellow", "purple"), seed=3)
    generate_dataset(tmp_path / "train", 1, 0, world, progress=False)
    assert read_world(tmp_path / "train" / "world.json") == world
    root = write_synthetic_suite(tmp_path / "eval", 3, world=world, progress=False)
    bench, questions = load(root, "pope")
    assert Image.open(bench.image_dir(root) / questions[0].image).size == (32, 32)
    assert read_world(root / MANIFEST) == world


def test_training_prompts_and_benchmark_prompts_end_with_one_suffix():
    """The model is trained on the world's prompts and scored on the benchmarks': both take the
    short-answer line from impdefs (benchmarks must import without impvlm), so they agree exactly."""
    from impdefs import SHORT_ANSWER_TAIL as TRAINING_SUFFIX

    assert TRAINING_SUFFIX == "\n" + SHORT_ANSWER_SUFFIX


def test_cli_writes_the_suite(tmp_path, capsys):
    from impvlm.cli import main

    assert (
        main(["bench-data", "--out", str(tmp_path / "s"), "--images", "2", "--seed", "9", "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "mmbench" in out and "IMP_JUDGE=exact" in out
    assert json.loads((tmp_path / "s" / MANIFEST).read_text())["seed"] == 9
    assert main(["bench-data", "--out", str(tmp_path / "s"), "--images", "0"]) == 2


# ---------------------------------------------------------------------------------------------
# The offline exact-match MM-Vet grader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("truth", "prediction", "score"),
    [
        ("red", "red", 1.0),
        ("red", "Red.", 1.0),
        ("red", "The red.", 1.0),
        ("red", "dark red", 0.0),
        ("red", "", 0.0),
        ("2<OR>two", "Two", 1.0),
        ("2<OR>two", "2 shapes", 0.0),
        ("left<OR>on the left", "On the left.", 1.0),
        ("left<OR>on the left", "right", 0.0),
        ("-1<AND>-5", "x = -1 or x = -5", 1.0),
        ("-1<AND>-5", "x = -1", 0.0),
        ("cat<AND>dog <OR> none", "None", 1.0),
        ("cat<AND>dog", "a dog and a cat", 1.0),
        ("cat<AND>dog", "a hotdog and a cat", 0.0),
    ],
)
def test_exact_match_score(truth, prediction, score):
    assert exact_match_score(truth, prediction) == score


def test_exact_judge_interface_and_selection(tmp_path, monkeypatch):
    judge = ExactMatchJudge()
    grade = judge.grade("What colour?", "red", "Red")
    assert (grade.score, grade.attempts) == (1.0, 1)
    identity = judge.identity()
    assert identity["description"] == "offline exact-match grader, not the official GPT-4 judge"
    assert identity["model"] == "exact-match" and identity["is_official_model"] is False
    assert identity["requests"] == 1
    assert isinstance(get_benchmark("mmvet", judge="exact").judge, ExactMatchJudge)
    with pytest.raises(JudgeError, match="unknown MM-Vet judge"):
        get_benchmark("mmvet", judge="gpt5")
    assert isinstance(judge_from_env(), ExactMatchJudge)  # IMP_JUDGE=exact (autouse fixture)
    monkeypatch.delenv(ENV_JUDGE)
    monkeypatch.delenv(ENV_BASE_URL, raising=False)
    monkeypatch.delenv(ENV_MODEL, raising=False)
    assert judge_from_env() is None
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")
    monkeypatch.setenv(ENV_MODEL, "m")
    llm = judge_from_env()
    assert isinstance(llm, MMVetJudge)
    llm.close()
