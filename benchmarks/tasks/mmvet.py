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

``MMVet(grades=PATH)`` (``imp bench score --mmvet-grades PATH``) scores from the grade file of MM-Vet's
own grader (``<model>_<judge>-grade-<N>runs.json``: ``{"v1_<id>": {"model": [...], "content": [...],
"score": [...]}}``, one entry per grading run): a question scores the mean of its runs, so the total
is the grader's mean over runs. The file holds no predictions, so it is taken as given.

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
    OFFICIAL_JUDGE_MODEL,
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
        self,
        judge: Judge | str | None = None,
        *,
        use_env: bool = True,
        cache_path: Path | None = None,
        grades: Path | str | None = None,
    ):
        self.judge = make_judge(judge) if isinstance(judge, str) else judge
        self.use_env = use_env
        self.cache_path = Path(cache_path) if cache_path else None
        self.grades = Path(grades) if grades else None

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
        if self.grades is not None:
            return self._score_from_grades(root, answers, questions)
        judge = self._judge()
        if judge is None:
            return self._ungraded(answers, questions)
        truth_path = Path(root) / FOLDER / GROUND_TRUTH_FILE
        truth = read_json(truth_path, "MM-Vet ground-truth file")
        cache = self._load_cache()
        identity = judge.identity()
        samples, grades = [], {}
        scored: list[tuple[dict, float]] = []
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
            scored.append((entry, score))
        headline, metrics = capability_metrics(scored)
        metrics["missing"] = float(missing)
        info = {"judge": judge.identity(), "grades": grades}
        return BenchmarkResult(
            self.name, self.headline_name, headline, metrics, samples, note=_graded_note(identity), info=info
        )

    def _ungraded(self, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        samples = [SampleScore(q.qid, answers.get(q.qid), None) for q in questions]
        note = (
            f"ungraded: no MM-Vet judge configured (set {ENV_BASE_URL} and {ENV_MODEL}, "
            f"or {ENV_JUDGE}={EXACT_JUDGE} for the offline exact-match grader, or score from a grade "
            "file with --mmvet-grades); answers kept, write_submission gives the official grader's input"
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

    def _score_from_grades(
        self, root: Path, answers: dict[str, str], questions: list[Question]
    ) -> BenchmarkResult:
        """Scores from an MM-Vet grader's grade file: per question, the mean over its grading runs."""
        assert self.grades is not None
        grades = read_grade_file(self.grades)
        truth_path = Path(root) / FOLDER / GROUND_TRUTH_FILE
        truth = read_json(truth_path, "MM-Vet ground-truth file") if truth_path.is_file() else {}
        samples, scored = [], []
        for q in questions:
            key = result_key(q)
            if key not in grades:
                raise BenchmarkDataError(f"MM-Vet question {key} has no grade in {self.grades}")
            score = mean([float(s) for s in grades[key]["score"]])
            samples.append(SampleScore(q.qid, answers.get(q.qid), score))
            scored.append((truth.get(key) or {}, score))
        headline, metrics = capability_metrics(scored)
        models = sorted({str(m) for g in grades.values() for m in g.get("model") or []})
        runs = max(len(g["score"]) for g in grades.values())
        identity = {
            "judge": "grade-file",
            "file": str(self.grades),
            "models": models,
            "runs": runs,
            "official_model": OFFICIAL_JUDGE_MODEL,
            "is_official_model": bool(models) and all(m.startswith(OFFICIAL_JUDGE_MODEL) for m in models),
        }
        note = (
            f"grades read from {self.grades.name} ({', '.join(models) or 'judge not named'}, {runs} run(s)); "
            "taken as given, not re-checked against these answers"
        )
        if not truth:
            note += f"; no {GROUND_TRUTH_FILE}, so no per-capability scores"
        return BenchmarkResult(
            self.name, self.headline_name, headline, metrics, samples, note=note, info={"judge": identity}
        )

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        results = {result_key(q): answers[q.qid] for q in questions if answers.get(q.qid) is not None}
        return [write_json(Path(out_dir) / RESULTS_FILE, results, indent=2)]


def capability_metrics(scored: list[tuple[dict, float]]) -> tuple[float | None, dict[str, float]]:
    """Total and per-capability (and capability-combination) scores x 100 of ``(truth entry, score)``."""
    per_cap: dict[str, list[float]] = {}
    per_combo: dict[str, list[float]] = {}
    for entry, score in scored:
        capabilities = sorted(set(entry.get("capability") or []))
        for cap in capabilities:
            per_cap.setdefault(cap, []).append(score)
        if capabilities:
            per_combo.setdefault("_".join(capabilities), []).append(score)
    headline = 100 * mean([score for _, score in scored]) if scored else None
    metrics: dict[str, float] = {"total": headline} if headline is not None else {}
    metrics.update({cap: 100 * mean(v) for cap, v in sorted(per_cap.items())})
    metrics.update({f"integration/{c}": 100 * mean(v) for c, v in sorted(per_combo.items())})
    return headline, metrics


def read_grade_file(path: Path) -> dict[str, dict]:
    """An MM-Vet grader's grade file: ``{"v1_<id>": {"model": [...], "content": [...], "score": [...]}}``,
    one list entry per grading run (its ``*_<judge>-grade-<N>runs.json``)."""
    data = read_json(path, "MM-Vet grade file")
    if not isinstance(data, dict) or not data:
        raise BenchmarkDataError(f"{path} is not an MM-Vet grade file (no entries keyed v1_<id>)")
    for key, entry in data.items():
        scores = entry.get("score") if isinstance(entry, dict) else None
        if not isinstance(scores, list) or not scores or not all(isinstance(s, int | float) for s in scores):
            raise BenchmarkDataError(
                f"entry {key!r} of {path} has no list of scores: not an MM-Vet grade file"
            )
    return data
