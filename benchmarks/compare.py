"""`imp compare`: did accuracy hold after export and quantization?

Takes a reference run folder (usually PyTorch) and candidate run folders of the same benchmarks
(exported bundles at different GGUF quants and ONNX precisions) and reports, per benchmark x
candidate: the headline metric and sub-metrics with deltas, per-sample agreement (same parsed
answer), the score flips with prompts and both answers, the token-level top-1 agreement and KL
divergence recorded at export, and a verdict with stated confidence (:mod:`benchmarks.verdict`):
HOLDS, DROPS or NOT DECIDED against the margin of the candidate's precision class; per candidate
also the verdict of its mean drop over its benchmarks (:mod:`benchmarks.verdict_suite`), in the
same family of claims. :mod:`benchmarks.compare_report` writes ``report.md``, ``report.json`` and
PNG charts; the verdict decides the exit status (:data:`benchmarks.verdict.EXIT_CODES`).

Only answers to the same questions pair: a benchmark the candidate did not answer, or answered on
other questions, prompts, images or answer-length cap than the reference, is reported as not
comparable (never as a pass), and accuracy is then not shown to hold.

Each row also keeps ``verdict``, the plain comparison of the point estimates with the margin
(PASS / FAIL), and the report ``holds`` from it; the verdicts with confidence are ``decision``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError
from benchmarks.run_inputs import RESULTS_FILE, RUN_FILE
from benchmarks.runner import SAMPLES
from benchmarks.verdict import DROPS, HOLDS, NOT_DECIDED, POINT_SCALE, overall, paired_evidence
from benchmarks.verdict_suite import SuiteEvidence, decide_with_suites
from export.quant_types import NEAR_LOSSLESS_MARGIN, QUANTIZED_MARGIN, AccuracyMargin
from runtimes.loader import held_near_lossless, run_label

NOT_COMPARABLE = "NOT COMPARABLE"


@dataclass(frozen=True)
class Thresholds:
    """The margins of the two precision classes; defaults from the quant-type table."""

    near_lossless_max_drop: float = NEAR_LOSSLESS_MARGIN.max_drop
    near_lossless_min_agreement: float = NEAR_LOSSLESS_MARGIN.min_agreement or 0.0
    quantized_max_drop: float = QUANTIZED_MARGIN.max_drop
    quantized_min_agreement: float = QUANTIZED_MARGIN.min_agreement or 0.0

    def margin(self, near_lossless: bool) -> AccuracyMargin:
        if near_lossless:
            return AccuracyMargin(self.near_lossless_max_drop, self.near_lossless_min_agreement or None)
        return AccuracyMargin(self.quantized_max_drop, self.quantized_min_agreement or None)


@dataclass
class Run:
    path: Path
    identity: dict[str, Any]
    results: dict[str, Any]

    @property
    def label(self) -> str:
        return run_label(self.identity) or self.path.name

    @property
    def near_lossless(self) -> bool:
        return held_near_lossless(self.identity)

    @property
    def threshold_class(self) -> str:
        return "near-lossless" if self.near_lossless else "quantized"

    def samples(self, benchmark: str) -> dict[str, dict[str, Any]]:
        path = self.path / benchmark / SAMPLES
        if not path.exists():
            return {}
        with open(path, encoding="utf-8") as handle:
            return {r["qid"]: r for r in map(json.loads, handle) if r}

    def token_level(self) -> dict[str, float] | None:
        """Token-level agreement vs PyTorch recorded in the bundle manifest at export: the LM's
        top-1 agreement and mean KL of next-token distributions on the probe set, and the vision
        encoder's minimum feature cosine."""
        from export.manifest import MANIFEST_FILE, read_manifest

        bundle = self.identity.get("bundle")
        if not bundle or not (Path(bundle) / MANIFEST_FILE).exists():
            return None
        manifest = read_manifest(bundle, verify=False)
        out: dict[str, float] = {}
        lm = manifest.lm.get(self.identity.get("lm") or "")
        logits = ((lm.validation if lm else None) or {}).get("logits") or {}
        for key in ("top1_agreement", "mean_kl"):
            if isinstance(logits.get(key), int | float):
                out[f"lm_{key}"] = float(logits[key])
        encoder = manifest.vision.get(self.identity.get("vision") or "")
        vision = (encoder.validation if encoder else None) or {}
        if isinstance(vision.get("min_cos"), int | float):
            out["vision_min_cos"] = float(vision["min_cos"])
        return out or None


def load_run(path: str | Path) -> Run:
    path = Path(path)
    results_file = path / RESULTS_FILE
    if not results_file.exists():
        raise BenchmarkDataError(f"{results_file} is missing: run `imp bench score {path}` first")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(f"{results_file} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("benchmarks"), dict):
        raise BenchmarkDataError(f"{results_file} has no 'benchmarks' table: it is not a result of imp bench")
    identity = results.get("runtime") or {}
    if not identity and (path / RUN_FILE).exists():
        identity = json.loads((path / RUN_FILE).read_text()).get("runtime", {})
    return Run(path, identity, results)


def answer_key(sample: dict[str, Any]) -> str:
    parsed = sample.get("parsed")
    return str(parsed) if parsed is not None else " ".join(str(sample.get("answer", "")).lower().split())


def pairing_problem(
    name: str, ref: Run, cand: Run, r_samples: dict[str, Any], c_samples: dict[str, Any]
) -> str | None:
    """Why the candidate's answers on ``name`` cannot be paired with the reference's (``None``: they can)."""
    c_res = cand.results["benchmarks"].get(name)
    if c_res is None:
        return f"{cand.path} has no results for {name}"
    r_in, c_in = ref.results["benchmarks"][name].get("inputs"), c_res.get("inputs")
    if r_in and c_in and r_in != c_in:
        return (
            f"the runs were given other questions ({r_in.get('questions')} vs {c_in.get('questions')} "
            "selected; other ids, prompts or images)"
        )
    r_gen, c_gen = ref.results.get("generation"), cand.results.get("generation")
    if r_gen and c_gen and r_gen.get("max_new_tokens") != c_gen.get("max_new_tokens"):
        return f"answer length caps differ (--max-new-tokens {r_gen['max_new_tokens']} vs {c_gen['max_new_tokens']})"
    if not r_samples or not c_samples:
        return "a run has no per-question samples (re-score it with `imp bench score`)"
    if set(r_samples) != set(c_samples):
        common = len(set(r_samples) & set(c_samples))
        return f"the runs answered other questions ({len(r_samples)} vs {len(c_samples)}, {common} in common)"
    other = [q for q in r_samples if r_samples[q].get("prompt") != c_samples[q].get("prompt")]
    if other:
        return f"{len(other)} question(s) were asked with other prompts (first: qid {other[0]!r})"
    return None


def not_comparable_row(name: str, ref: Run, cand: Run, reason: str) -> dict[str, Any]:
    r_res, c_res = ref.results["benchmarks"][name], cand.results["benchmarks"].get(name, {})
    return {
        "benchmark": name,
        "headline_name": r_res.get("headline_name"),
        "reference": r_res.get("headline"),
        "candidate": c_res.get("headline"),
        "status": c_res.get("status"),
        "questions": 0,
        "agreement": None,
        "flips": [],
        "delta": None,
        "delta_points": None,
        "metric_deltas": {},
        "verdict": NOT_COMPARABLE,
        "reason": reason,
    }


def compare_benchmark(name: str, ref: Run, cand: Run, thresholds: Thresholds) -> dict[str, Any]:
    r_samples, c_samples = ref.samples(name), cand.samples(name)
    reason = pairing_problem(name, ref, cand, r_samples, c_samples)
    if reason:
        return not_comparable_row(name, ref, cand, reason)
    r_res, c_res = ref.results["benchmarks"][name], cand.results["benchmarks"][name]
    common = [q for q in r_samples if q in c_samples]
    agree = sum(answer_key(r_samples[q]) == answer_key(c_samples[q]) for q in common)
    flips = [
        {
            "qid": q,
            "prompt": r_samples[q].get("prompt"),
            "reference": r_samples[q].get("answer"),
            "candidate": c_samples[q].get("answer"),
            "reference_score": r_samples[q].get("score"),
            "candidate_score": c_samples[q].get("score"),
        }
        for q in common
        if r_samples[q].get("score") != c_samples[q].get("score")
    ]
    out: dict[str, Any] = {
        "benchmark": name,
        "headline_name": r_res.get("headline_name"),
        "reference": r_res.get("headline"),
        "candidate": c_res.get("headline"),
        "status": c_res.get("status"),
        "questions": len(common),
        "agreement": 100.0 * agree / len(common) if common else None,
        "flips": flips,
        "delta": None,
        "delta_points": None,
    }
    if r_res.get("headline") is not None and c_res.get("headline") is not None:
        out["delta"] = c_res["headline"] - r_res["headline"]
        out["delta_points"] = out["delta"] * POINT_SCALE.get(name, 1.0)
    out["metric_deltas"] = {
        k: c_res["metrics"][k] - v
        for k, v in r_res.get("metrics", {}).items()
        if isinstance(v, int | float) and isinstance(c_res.get("metrics", {}).get(k), int | float)
    }
    out["verdict"] = verdict(out, cand.near_lossless, thresholds)
    if out["delta"] is not None:
        scored = [q for q in common if r_samples[q].get("score") is not None]
        pair = [r_samples[q] for q in scored], [c_samples[q] for q in scored]
        out["evidence"] = paired_evidence(
            name, *pair, agree=sum(answer_key(r_samples[q]) == answer_key(c_samples[q]) for q in scored)
        )
    return out


def verdict(row: dict[str, Any], near_lossless: bool, thresholds: Thresholds) -> str:
    """PASS / FAIL of the point estimates against the margin (no confidence: see ``decision``)."""
    margin = thresholds.margin(near_lossless)
    if row.get("delta_points") is None and row.get("agreement") is None:
        return "n/a"
    if row.get("delta_points") is not None and -row["delta_points"] > margin.max_drop + 1e-9:
        return "FAIL"
    agreement = margin.min_agreement
    if agreement is not None and row.get("agreement") is not None and row["agreement"] < agreement - 1e-9:
        return "FAIL"
    return "PASS"


def compare_runs(
    reference: Path, candidates: list[Path], thresholds: Thresholds | None = None
) -> dict[str, Any]:
    thresholds = thresholds or Thresholds()
    ref = load_run(reference)
    names = list(ref.results["benchmarks"])
    report: dict[str, Any] = {
        "reference": {"label": ref.label, "path": str(ref.path), "identity": ref.identity},
        "thresholds": asdict(thresholds),
        "benchmarks": names,
        "candidates": [],
    }
    for cand in map(load_run, candidates):
        rows = [compare_benchmark(n, ref, cand, thresholds) for n in names]
        timing = {n: r.get("timing", {}) for n, r in cand.results["benchmarks"].items() if n in names}
        report["candidates"].append(
            {
                "label": cand.label,
                "path": str(cand.path),
                "identity": cand.identity,
                "class": cand.threshold_class,
                "margin": asdict(thresholds.margin(cand.near_lossless)),
                "token_level": cand.token_level(),
                "rows": rows,
                "timing": timing,
                "verdict": candidate_verdict([r["verdict"] for r in rows]),
            }
        )
    report["reference"]["timing"] = {n: ref.results["benchmarks"][n].get("timing", {}) for n in names}
    report["reference"]["headlines"] = {n: ref.results["benchmarks"][n].get("headline") for n in names}
    report["holds"] = all(c["verdict"] == "PASS" for c in report["candidates"])
    add_decisions(report)
    return report


def add_decisions(report: dict[str, Any]) -> None:
    """Decide every paired row and each candidate's suite mean as one family (Holm), then each
    candidate and the report."""
    suites = []
    for cand in report["candidates"]:
        parts = tuple(r["evidence"] for r in cand["rows"] if r.get("evidence") is not None)
        cand["suite"] = None
        if parts:
            suites.append((cand, SuiteEvidence(parts), AccuracyMargin(**cand["margin"])))
    rows = [
        (row, AccuracyMargin(**cand["margin"]))
        for cand in report["candidates"]
        for row in cand["rows"]
        if row.get("evidence") is not None
    ]
    decided, suite_decided = decide_with_suites(
        [(row.pop("evidence"), m) for row, m in rows], [(s, m) for _, s, m in suites]
    )
    for (row, _), row_decided in zip(rows, decided):
        row["decision"], row["confidence"] = row_decided["verdict"], row_decided
    for (cand, _, _), suite in zip(suites, suite_decided):
        cand["suite"] = suite
    for cand in report["candidates"]:
        for row in cand["rows"]:
            row.setdefault("decision", NOT_COMPARABLE if row["verdict"] == NOT_COMPARABLE else "n/a")
            row.pop("evidence", None)
        decisions = [r["decision"] for r in cand["rows"] if r["decision"] != "n/a"]
        cand["decision"] = candidate_decision(decisions, cand["suite"]["verdict"] if cand["suite"] else None)
    decisions = [c["decision"] for c in report["candidates"]]
    report["decision"] = (
        NOT_COMPARABLE if NOT_COMPARABLE in decisions and DROPS not in decisions else overall(decisions)
    )


def candidate_decision(decisions: list[str], suite: str | None) -> str:
    """A candidate's verdict from its benchmarks' and its suite mean's: DROPS if any drops, else NOT
    COMPARABLE if a benchmark could not be paired, else HOLDS if the suite mean holds (or every
    benchmark does, which implies it), else NOT DECIDED."""
    if DROPS in decisions or suite == DROPS:
        return DROPS
    if NOT_COMPARABLE in decisions:
        return NOT_COMPARABLE
    return HOLDS if suite == HOLDS else overall(decisions)


def exit_status(report: dict[str, Any], strict: bool = False) -> int:
    """0 holds, 1 drops (or could not be paired), 3 not decided (1 with ``strict``)."""
    decision = report["decision"]
    if decision == NOT_DECIDED:
        return 1 if strict else 3
    return 0 if decision == HOLDS else 1


def candidate_verdict(verdicts: list[str]) -> str:
    """FAIL when a benchmark failed, else NOT COMPARABLE when one could not be paired, else PASS."""
    for worst in ("FAIL", NOT_COMPARABLE):
        if worst in verdicts:
            return worst
    return "PASS"
