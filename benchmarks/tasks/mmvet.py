"""MM-Vet: 218 open-ended questions graded by an LLM judge.

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    mm-vet/llava-mm-vet.jsonl   questions (no instruction suffix)
    mm-vet/images/              images (Question.image is relative to it)
    mm-vet/mm-vet.json          ground truth: {"v1_<id>": {"imagename", "capability": [...],
                                "question", "answer"}}; needed only for grading

Grading (MM-Vet's evaluator) goes through :class:`benchmarks.mmvet_judge.MMVetJudge`: the judge sees
the ground-truth question, the answer (``<AND>`` / ``<OR>`` spaced out) and the prediction; total =
100 x mean score, plus a mean per capability (rec, ocr, know, gen, spat, math) and per capability
combination. The judge identity is recorded in ``info["judge"]``. ``MMVet(judge="exact")`` or the
environment variable ``IMP_JUDGE=exact`` select the offline exact-match grader
(:class:`benchmarks.mmvet_judge.ExactMatchJudge`, not the official GPT-4 judge: its scores are not
comparable with published ones). With no judge configured (see :mod:`benchmarks.mmvet_judge`), the
result is "ungraded": headline ``None``, answers kept in the samples. :meth:`MMVet.write_submission`
writes ``mmvet_results.json`` (``{"v1_<id>": answer}``), the input of the official evaluator.

Grades can be cached in a JSON file (``cache_path``): an entry is reused only for the same
prediction, judge model and endpoint, so re-scoring never re-asks the judge needlessly.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    STATUS_UNGRADED,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    llava_jsonl_questions,
    mean,
    read_json,
    write_json,
)
from benchmarks.mmvet_judge import (
    ENV_BASE_URL,
    ENV_JUDGE,
    ENV_MODEL,
    EXACT_JUDGE,
    Judge,
    judge_from_env,
    make_judge,
)

FOLDER = "mm-vet"
QUESTION_FILE = "llava-mm-vet.jsonl"
IMAGE_DIR = "images"
GROUND_TRUTH_FILE = "mm-vet.json"
RESULTS_FILE = "mmvet_results.json"
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def result_key(question: Question) -> str:
    """The key of a question in MM-Vet's files: ``v1_<question_id>``."""
    return f"v1_{question.meta.get('question_id', question.qid)}"


def _graded_note(identity: dict) -> str:
    """Who graded the answers, and whether the scores compare with the official judge's."""
    if identity.get("offline"):
        note = f"graded by the {identity['description']}"
    else:
        note = f"graded by {identity['model']} at {identity['base_url']}"
    if not identity["is_official_model"]:
        note += f" (official judge: {identity['official_model']}; scores are not comparable)"
    return note


class MMVet(Benchmark):
    name = "mmvet"
    headline_name = "total"

    def __init__(
        self, judge: Judge | str | None = None, *, use_env: bool = True, cache_path: Path | None = None
    ):
        self.judge = make_judge(judge) if isinstance(judge, str) else judge
        self.use_env = use_env
        self.cache_path = Path(cache_path) if cache_path else None

    def load(self, root: Path) -> list[Question]:
        return llava_jsonl_questions(Path(root) / FOLDER / QUESTION_FILE, max_new_tokens=LONG_MAX_NEW_TOKENS)

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR

    def _judge(self) -> Judge | None:
        if self.judge is None and self.use_env:
            self.judge = judge_from_env()
        return self.judge

    def _load_cache(self) -> dict:
        if self.cache_path and self.cache_path.is_file():
            try:
                return json.loads(self.cache_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {}
        return {}

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        judge = self._judge()
        if judge is None:
            return self._ungraded(answers, questions)
        truth_path = Path(root) / FOLDER / GROUND_TRUTH_FILE
        truth = read_json(truth_path, "MM-Vet ground-truth file")
        cache = self._load_cache()
        identity = judge.identity()
        samples, grades = [], {}
        scores: list[float] = []
        per_cap: dict[str, list[float]] = {}
        per_combo: dict[str, list[float]] = {}
        missing = 0
        for q in questions:
            key = result_key(q)
            entry = truth.get(key)
            if entry is None:
                raise BenchmarkDataError(f"MM-Vet question {key} is not in {truth_path}")
            prediction = answers.get(q.qid)
            missing += prediction is None
            prediction = prediction or ""
            grade = self._grade(judge, cache, key, entry, prediction)
            score = float(grade["score"])
            grades[q.qid] = {k: grade[k] for k in ("score", "content", "attempts", "model")}
            samples.append(SampleScore(q.qid, prediction, score))
            scores.append(score)
            capabilities = sorted(set(entry.get("capability") or []))
            for cap in capabilities:
                per_cap.setdefault(cap, []).append(score)
            per_combo.setdefault("_".join(capabilities), []).append(score)
        headline = 100 * mean(scores) if scores else None
        metrics: dict[str, float] = {"total": headline} if headline is not None else {}
        metrics.update({cap: 100 * mean(v) for cap, v in sorted(per_cap.items())})
        metrics.update({f"integration/{c}": 100 * mean(v) for c, v in sorted(per_combo.items())})
        metrics["missing"] = float(missing)
        info = {"judge": judge.identity(), "grades": grades}
        return BenchmarkResult(
            self.name, self.headline_name, headline, metrics, samples, note=_graded_note(identity), info=info
        )

    def _ungraded(self, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        samples = [SampleScore(q.qid, answers.get(q.qid), None) for q in questions]
        note = (
            f"ungraded: no MM-Vet judge configured (set {ENV_BASE_URL} and {ENV_MODEL}, "
            f"or {ENV_JUDGE}={EXACT_JUDGE} for the offline exact-match grader); "
            "answers kept, write_submission gives the official grader's input"
        )
        return BenchmarkResult(self.name, self.headline_name, None, {}, samples, note, STATUS_UNGRADED)

    def _grade(self, judge: Judge, cache: dict, key: str, entry: dict, prediction: str) -> dict:
        """The judge's grade of one answer: from the cache when the same judge graded the same answer,
        else asked now and cached (the cache file rewritten, so an interrupted run keeps its grades)."""
        identity = judge.identity()
        cached = cache.get(key)
        if (
            isinstance(cached, dict)
            and cached.get("prediction") == prediction
            and cached.get("judge_model") == identity["model"]
            and cached.get("base_url") == identity["base_url"]
        ):
            return cached
        result = judge.grade(str(entry["question"]), str(entry["answer"]), prediction)
        grade = {
            **result.to_dict(),
            "prediction": prediction,
            "judge_model": identity["model"],
            "base_url": identity["base_url"],
        }
        cache[key] = grade
        if self.cache_path:
            write_json(self.cache_path, cache, indent=1)
        return grade

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        results = {result_key(q): answers[q.qid] for q in questions if answers.get(q.qid) is not None}
        return [write_json(Path(out_dir) / RESULTS_FILE, results, indent=2)]
