"""`imp compare`: did accuracy hold after export and quantization?

Takes a reference run folder (usually PyTorch) and candidate run folders of the same benchmarks
(exported bundles at different GGUF quants and ONNX precisions) and reports, per benchmark x
candidate: the headline metric and sub-metrics with deltas, per-sample agreement (same parsed
answer), the score flips with prompts and both answers, a paired bootstrap CI of the per-question
score delta and McNemar's exact test for binary scores, the token-level top-1 agreement and KL
divergence recorded at export, and a verdict against thresholds. Writes ``report.md``,
``report.json`` and PNG charts; the verdict decides the exit status.

Only answers to the same questions pair: a benchmark the candidate did not answer, or answered on
other questions, prompts, images or answer-length cap than the reference, is reported as not
comparable (never as a pass), and accuracy is then not shown to hold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError
from benchmarks.run_inputs import RESULTS_FILE, RUN_FILE
from benchmarks.runner import SAMPLES
from benchmarks.stats import bootstrap_delta_ci, is_binary, mcnemar_exact
from export.quant_types import near_lossless

# Headlines in other units than percent, converted to percentage points for the thresholds.
POINT_SCALE = {"mme": 100 / 2000}
NOT_COMPARABLE = "NOT COMPARABLE"


@dataclass(frozen=True)
class Thresholds:
    """Defaults from the project card: q8_0 / f16 lose <= 0.2 pt with >= 99% agreement; 4-5 bit <= 1 pt."""

    near_lossless_max_drop: float = 0.2
    near_lossless_min_agreement: float = 99.0
    quantized_max_drop: float = 1.0
    quantized_min_agreement: float = 0.0


@dataclass
class Run:
    path: Path
    identity: dict[str, Any]
    results: dict[str, Any]

    @property
    def label(self) -> str:
        ident = self.identity
        kind = ident.get("runtime", "run")
        if kind == "torch":
            return f"torch-{ident.get('dtype', 'fp32')}"
        if kind == "native":
            return f"native-{ident.get('lm')}+mmproj-{ident.get('mmproj')}"
        if kind == "exported":
            return f"{ident.get('lm')}+{ident.get('vision')}"
        return self.path.name

    @property
    def near_lossless(self) -> bool:
        kind = self.identity.get("runtime")
        if kind == "torch":
            return True
        if kind == "native":
            return False  # llama.cpp's own preprocessing differs from Imp's: measured, not held to 0.2 pt
        return near_lossless(self.identity.get("lm"), self.identity.get("vision"))

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


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


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
    agreement = 100.0 * agree / len(common) if common else None
    flips, r_scores, c_scores = [], [], []
    for q in common:
        rs, cs = r_samples[q].get("score"), c_samples[q].get("score")
        if rs is None or cs is None:
            continue
        r_scores.append(float(rs))
        c_scores.append(float(cs))
        if rs != cs:
            flips.append(
                {
                    "qid": q,
                    "prompt": r_samples[q].get("prompt"),
                    "reference": r_samples[q].get("answer"),
                    "candidate": c_samples[q].get("answer"),
                    "reference_score": rs,
                    "candidate_score": cs,
                }
            )
    out: dict[str, Any] = {
        "benchmark": name,
        "headline_name": r_res.get("headline_name"),
        "reference": r_res.get("headline"),
        "candidate": c_res.get("headline"),
        "status": c_res.get("status"),
        "questions": len(common),
        "agreement": agreement,
        "flips": flips,
    }
    scale = POINT_SCALE.get(name, 1.0)
    if r_res.get("headline") is not None and c_res.get("headline") is not None:
        out["delta"] = c_res["headline"] - r_res["headline"]
        out["delta_points"] = out["delta"] * scale
    else:
        out["delta"] = out["delta_points"] = None
    out["metric_deltas"] = {
        k: c_res["metrics"][k] - v
        for k, v in r_res.get("metrics", {}).items()
        if isinstance(v, int | float) and isinstance(c_res.get("metrics", {}).get(k), int | float)
    }
    if r_scores:
        # per-question scores in [0, 1] -> percentage points
        mean, low, high = bootstrap_delta_ci(r_scores, c_scores)
        out["score_delta_ci"] = {"mean": 100 * mean, "low": 100 * low, "high": 100 * high}
        if is_binary(r_scores) and is_binary(c_scores):
            out["mcnemar"] = mcnemar_exact(r_scores, c_scores)
    out["verdict"] = verdict(out, cand.near_lossless, thresholds)
    return out


def verdict(row: dict[str, Any], near_lossless: bool, thresholds: Thresholds) -> str:
    max_drop = thresholds.near_lossless_max_drop if near_lossless else thresholds.quantized_max_drop
    min_agree = (
        thresholds.near_lossless_min_agreement if near_lossless else thresholds.quantized_min_agreement
    )
    drop = None
    if row.get("delta_points") is not None:
        drop = -row["delta_points"]
    elif row.get("score_delta_ci"):
        drop = -row["score_delta_ci"]["mean"]
    if drop is None and row.get("agreement") is None:
        return "n/a"
    if drop is not None and drop > max_drop + 1e-9:
        return "FAIL"
    if row.get("agreement") is not None and row["agreement"] < min_agree - 1e-9:
        return "FAIL"
    return "PASS"


def compare_runs(
    reference: Path, candidates: list[Path], thresholds: Thresholds | None = None
) -> dict[str, Any]:
    thresholds = thresholds or Thresholds()
    ref = load_run(reference)
    cands = [load_run(c) for c in candidates]
    names = list(ref.results["benchmarks"])
    report: dict[str, Any] = {
        "reference": {"label": ref.label, "path": str(ref.path), "identity": ref.identity},
        "thresholds": asdict(thresholds),
        "benchmarks": names,
        "candidates": [],
    }
    for cand in cands:
        rows = [compare_benchmark(n, ref, cand, thresholds) for n in names]
        verdicts = [r["verdict"] for r in rows]
        timing = {
            n: cand.results["benchmarks"][n].get("timing", {})
            for n in names
            if n in cand.results["benchmarks"]
        }
        report["candidates"].append(
            {
                "label": cand.label,
                "path": str(cand.path),
                "identity": cand.identity,
                "class": cand.threshold_class,
                "token_level": cand.token_level(),
                "rows": rows,
                "timing": timing,
                "verdict": candidate_verdict(verdicts),
            }
        )
    report["reference"]["timing"] = {n: ref.results["benchmarks"][n].get("timing", {}) for n in names}
    report["reference"]["headlines"] = {n: ref.results["benchmarks"][n].get("headline") for n in names}
    report["holds"] = all(c["verdict"] == "PASS" for c in report["candidates"])
    return report


def candidate_verdict(verdicts: list[str]) -> str:
    """FAIL when a benchmark failed, else NOT COMPARABLE when one could not be paired, else PASS."""
    for worst in ("FAIL", NOT_COMPARABLE):
        if worst in verdicts:
            return worst
    return "PASS"


def holds_line(report: dict[str, Any]) -> str:
    verdicts = [c["verdict"] for c in report["candidates"]]
    if report["holds"]:
        return "accuracy holds: **yes**"
    if "FAIL" in verdicts:
        return "accuracy holds: **NO**"
    unpaired = sum(r["verdict"] == NOT_COMPARABLE for c in report["candidates"] for r in c["rows"])
    return (
        f"accuracy holds: **not shown** ({unpaired} benchmark run(s) could not be paired with the reference)"
    )


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def verdict_table(report: dict[str, Any]) -> str:
    """One row per candidate x benchmark: headline, delta, agreement, CI, verdict."""
    lines = [
        f"reference: {report['reference']['label']}",
        "| candidate | benchmark | reference | candidate | delta | agreement % | per-question delta, 95% CI (pt) | McNemar p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cand in report["candidates"]:
        for row in cand["rows"]:
            ci = row.get("score_delta_ci")
            ci_text = f"[{ci['low']:.2f}, {ci['high']:.2f}]" if ci else "-"
            p = row.get("mcnemar", {}).get("p_value")
            lines.append(
                f"| {cand['label']} | {row['benchmark']} | {_fmt(row['reference'])} | {_fmt(row['candidate'])} "
                f"| {_fmt(row['delta'])} | {_fmt(row['agreement'], 1)} | {ci_text} | {_fmt(p, 3)} | {row['verdict']} |"
            )
    lines.append("")
    for cand in report["candidates"]:
        tl = cand.get("token_level")
        tl_text = ", ".join(f"{k}={v:.4g}" for k, v in tl.items()) if tl else "n/a"
        lines.append(
            f"- **{cand['label']}** ({cand['class']}): {cand['verdict']}; token level vs PyTorch: {tl_text}"
        )
        for row in cand["rows"]:
            if row["verdict"] == NOT_COMPARABLE:
                lines.append(f"  - {row['benchmark']} not comparable: {row['reason']}")
    lines.append(f"\n{holds_line(report)}")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    charts = write_charts(report, out_dir)
    md = ["# Cross-runtime accuracy report", "", verdict_table(report), ""]
    t = report["thresholds"]
    md.append(
        f"Thresholds: near-lossless (f16 / q8_0 LM, fp32 / fp16 vision) drop <= {t['near_lossless_max_drop']} pt "
        f"and agreement >= {t['near_lossless_min_agreement']}%; quantized drop <= {t['quantized_max_drop']} pt. "
        "MME is converted to points of its 2000 maximum. The CI column is the paired bootstrap CI of the mean "
        "per-question score delta; where the headline is not a mean of per-question scores (POPE's F1, MME's "
        "pairs) it can differ from the headline delta, even in sign."
    )
    for name, path in charts.items():
        md += ["", f"![{name}]({path.name})"]
    md += ["", "## Score flips", ""]
    for cand in report["candidates"]:
        for row in cand["rows"]:
            for flip in row["flips"][:20]:
                prompt = (flip["prompt"] or "").replace("\n", " ")[:100]
                md.append(
                    f"- {cand['label']} / {row['benchmark']} / {flip['qid']}: `{prompt}` reference "
                    f"`{flip['reference']}` ({flip['reference_score']}) vs `{flip['candidate']}` ({flip['candidate_score']})"
                )
            if len(row["flips"]) > 20:
                md.append(f"- ... {len(row['flips']) - 20} more in report.json")
    paths["md"].write_text("\n".join(md) + "\n")
    paths.update(charts)
    return paths


def write_charts(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = report["benchmarks"]
    labels = [report["reference"]["label"]] + [c["label"] for c in report["candidates"]]
    charts: dict[str, Path] = {}

    def headline(name: str, idx: int) -> float:
        if idx == 0:
            value = report["reference"]["headlines"].get(name)
        else:
            row = next((r for r in report["candidates"][idx - 1]["rows"] if r["benchmark"] == name), None)
            value = row["candidate"] if row else None
        return float("nan") if value is None else value * POINT_SCALE.get(name, 1.0)

    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.3), 4))
    width = 0.8 / len(labels)
    x = np.arange(len(names))
    for i, label in enumerate(labels):
        ax.bar(x + i * width, [headline(n, i) for n in names], width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, names)
    ax.set_ylabel("headline (points; MME / 20)")
    ax.legend(fontsize=7)
    ax.set_title("metric per runtime")
    fig.tight_layout()
    charts["metric per runtime"] = out_dir / "metric_per_runtime.png"
    fig.savefig(charts["metric per runtime"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.3), 4))
    width = 0.8 / max(1, len(report["candidates"]))
    for i, cand in enumerate(report["candidates"]):
        rows = {r["benchmark"]: r for r in cand["rows"]}
        means, errs = [], [[], []]
        for n in names:
            ci = rows.get(n, {}).get("score_delta_ci")
            m = ci["mean"] if ci else 0.0
            means.append(m)
            errs[0].append(m - ci["low"] if ci else 0.0)
            errs[1].append(ci["high"] - m if ci else 0.0)
        ax.bar(x + i * width, means, width, yerr=errs, capsize=2, label=cand["label"])
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(x + 0.4 - width / 2, names)
    ax.set_ylabel("per-question score delta vs reference (pt, 95% CI)")
    ax.legend(fontsize=7)
    ax.set_title("delta with bootstrap CI")
    fig.tight_layout()
    charts["delta with CI"] = out_dir / "delta_ci.png"
    fig.savefig(charts["delta with CI"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    entries = [(report["reference"]["label"], report["reference"]["timing"], 0)] + [
        (c["label"], c["timing"], i + 1) for i, c in enumerate(report["candidates"])
    ]
    for label, timing, idx in entries:
        secs = [t.get("seconds", 0) / max(1, t.get("questions", 1)) for t in timing.values() if t]
        scores = [headline(n, idx) for n in names]
        scores = [s for s in scores if s == s]
        if secs and scores:
            ax.scatter(sum(secs) / len(secs), sum(scores) / len(scores), label=label)
            ax.annotate(label, (sum(secs) / len(secs), sum(scores) / len(scores)), fontsize=7)
    ax.set_xlabel("mean seconds per question")
    ax.set_ylabel("mean headline (points)")
    ax.set_title("latency vs accuracy per runtime / quant")
    fig.tight_layout()
    charts["latency vs accuracy"] = out_dir / "latency_vs_accuracy.png"
    fig.savefig(charts["latency vs accuracy"], dpi=100)
    plt.close(fig)
    return charts
