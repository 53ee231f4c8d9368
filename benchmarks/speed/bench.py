"""One ``imp bench-speed`` run: machine limits, then every runtime of every preset, then the report.

All figures of a run come from one invocation, so their ratios are measured under the same
conditions; each runtime runs in its own process (:mod:`benchmarks.speed.isolate`), one at a time,
so its peak RSS is its own. A worker that fails (e.g. out of memory) is recorded in ``errors`` and
the rest of the run goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.isolate import WorkerFailed, run_isolated

log = logging.getLogger(__name__)

FORMAT = "impvlm-speed"
FORMAT_VERSION = 1


def run_speed_benchmark(
    configs: Sequence[SpeedConfig], out: Path, argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """Measure every config (one per preset) and write ``speed.json``, ``speed.md`` and charts to ``out``."""
    from benchmarks.speed.analysis import analyze
    from benchmarks.speed.machine import machine_info
    from benchmarks.speed.report import write_report
    from benchmarks.speed.workers import measure_limits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    cores = machine["cores_usable"]
    first = configs[0]
    thread_counts = sorted({1, cores, first.threads})
    log.info("measuring memory bandwidth (%d MB copy, threads %s)", first.bandwidth_mb, thread_counts)
    limits = run_isolated(measure_limits, first.bandwidth_mb, thread_counts)
    results: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(argv) if argv is not None else sys.argv,
        "machine": machine,
        "limits": limits,
        "models": {},
    }
    for config in configs:
        raw = measure_preset(config, out)
        results["models"][config.preset] = analyze(raw, limits, config)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["paths"] = {k: str(v) for k, v in write_report(results, out).items()}
    return results


def measure_preset(config: SpeedConfig, out: Path) -> dict[str, Any]:
    """Prepare (or reuse) the model and bundle of ``config``, then run every worker."""
    from benchmarks.speed.model import prepare_model
    from benchmarks.speed.workers import (
        WorkerSpec,
        measure_exported,
        measure_profile,
        measure_torch,
        measure_vision_variant,
    )
    from benchmarks.speed.workload import make_workload
    from export.bundle import load_manifest

    started = time.perf_counter()
    prepared = prepare_model(config)
    manifest = load_manifest(prepared.bundle, verify=False)
    work = out / "work" / config.preset
    n_images = max(config.images, config.warmup + config.runs, 2)
    workload = make_workload(out / "work" / "images", n_images, seed=config.seed)
    spec = WorkerSpec(
        checkpoint=str(prepared.checkpoint),
        bundle=str(prepared.bundle),
        images=tuple(str(p) for p in workload.images),
        questions=workload.questions,
        threads=config.threads,
        runs=config.runs,
        warmup=config.warmup,
        answer_tokens=config.answer_tokens,
        throughput_images=config.images,
        questions_per_image=config.questions_per_image,
        features_dir=str(work / "features"),
    )
    raw: dict[str, Any] = {
        "config": config.to_dict(),
        "prepared": prepared.to_dict(),
        "manifest": _manifest_facts(manifest),
        "workload": {"images": list(spec.images), "questions": list(spec.questions)},
        "torch": None,
        "exported": {},
        "vision_variants": {},
        "profiles": {},
        "errors": [],
    }
    tasks: list[tuple[str, Callable[[], Any], Callable[[Any], None]]] = []
    if config.measure_torch:
        tasks.append(
            ("torch fp32", lambda: run_isolated(measure_torch, spec), lambda r: raw.__setitem__("torch", r))
        )
    quants = [config.deploy_lm, *(q for q in config.all_quants if q != config.deploy_lm)]
    for q in quants:
        deploy = q == config.deploy_lm
        sweep = config.sweep_threads if deploy else ()
        tasks.append(
            (
                f"exported {q} + {config.deploy_vision}",
                lambda q=q, deploy=deploy, sweep=sweep: run_isolated(
                    measure_exported, spec, q, config.deploy_vision, deploy, sweep
                ),
                lambda r, q=q: raw["exported"].__setitem__(q, r),
            )
        )
    for v in config.vision:
        if v == config.deploy_vision:
            continue
        tasks.append(
            (
                f"vision {v} (+ {config.deploy_lm})",
                lambda v=v: run_isolated(measure_vision_variant, spec, config.deploy_lm, v),
                lambda r, v=v: raw["vision_variants"].__setitem__(v, r),
            )
        )
    for name in config.profiles:
        tasks.append(
            (
                f"profile {name}",
                lambda name=name: run_isolated(measure_profile, spec, name),
                lambda r, name=name: raw["profiles"].__setitem__(name, r),
            )
        )
    for i, (label, call, store) in enumerate(tasks, 1):
        log.info("[%s %d/%d] %s", config.preset, i, len(tasks), label)
        t0 = time.perf_counter()
        try:
            store(call())
        except WorkerFailed as exc:
            log.error("%s failed: %s", label, exc)
            raw["errors"].append({"task": label, "error": str(exc)})
        log.info("[%s %d/%d] %s done in %.1fs", config.preset, i, len(tasks), label, time.perf_counter() - t0)
    raw["seconds"] = round(time.perf_counter() - started, 1)
    return raw


def _manifest_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the report needs from the bundle manifest: model, files, export and quantize times."""
    files = manifest["files"]

    def artifact(entry: dict[str, Any]) -> dict[str, Any]:
        names = [entry["file"], *entry.get("extra_files", [])]
        return {
            "file": entry["file"],
            "bytes": sum(files[n]["bytes"] for n in names),
            "export_seconds": entry.get("export_seconds"),
            "details": entry.get("details", {}),
        }

    return {
        "model": manifest["model"],
        "created": manifest.get("created"),
        "timings": manifest.get("timings", {}),
        "vision": {k: artifact(v) for k, v in manifest["vision"].items()},
        "lm": {k: artifact(v) for k, v in manifest["lm"].items()},
        "tools": manifest.get("tools", {}),
    }
