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
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.isolate import WorkerFailed, run_isolated
from benchmarks.speed.record import Record
from benchmarks.speed.rows import SpeedResults
from impvlm.errors import ConfigError

if TYPE_CHECKING:
    from benchmarks.speed.model import PreparedModel
    from benchmarks.speed.protocol import WorkerSpec
    from export.manifest import Manifest

log = logging.getLogger(__name__)

FORMAT = "impvlm-speed"
FORMAT_VERSION = 1
#: photos the workload needs at least: one per benchmark of the question mix and a warm-up one
MIX_PHOTOS = 5


def run_speed_benchmark(
    configs: Sequence[SpeedConfig], out: Path, argv: Sequence[str] | None = None
) -> SpeedResults:
    """Measure every config (one per preset) and write ``speed.json``, ``speed.md`` and charts to ``out``."""
    from benchmarks.speed.analysis import analyze
    from benchmarks.speed.machine import machine_info
    from benchmarks.speed.report import write_report
    from benchmarks.speed.workers import measure_limits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    first = configs[0]
    thread_counts = sorted({1, machine.cores_usable, first.threads})
    log.info("measuring memory bandwidth (%d MB copy, threads %s)", first.bandwidth_mb, thread_counts)
    limits = run_isolated(measure_limits, first.bandwidth_mb, thread_counts)
    models = {c.preset: analyze(measure_preset(c, out), limits, c) for c in configs}
    results = SpeedResults(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        created=created,
        command=list(argv) if argv is not None else sys.argv,
        machine=replace(machine, load_average_end=list(os.getloadavg())),
        limits=limits,
        models=models,
        seconds=round(time.perf_counter() - started, 1),
    )
    return write_report(results, out)


def rerender(out: Path) -> SpeedResults:
    """Recompute the analysis and rewrite the report of a finished run from its ``speed.json``
    (nothing is measured again)."""
    import json

    from benchmarks.speed.analysis import analyze
    from benchmarks.speed.report import JSON_FILE, write_report

    path = Path(out) / JSON_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: nothing to re-render")
    results = SpeedResults.from_dict(json.loads(path.read_text()))
    models = {
        preset: analyze(s.raw, results.limits, config_from_dict(s.raw["config"]))
        for preset, s in results.models.items()
    }
    return write_report(replace(results, models=models), Path(out))


def config_from_dict(data: dict[str, Any]) -> SpeedConfig:
    """The :class:`SpeedConfig` a ``speed.json`` recorded."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    values["cache"] = Path(values["cache"])
    if values.get("checkpoint"):
        values["checkpoint"] = Path(values["checkpoint"])
    return SpeedConfig(**values)


class Job(NamedTuple):
    """One measurement: its label, the worker and its arguments, where in ``raw`` its result goes, and
    whether it runs in a process of its own."""

    label: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    where: tuple[str, ...]
    isolated: bool = True


def measure_preset(config: SpeedConfig, out: Path) -> dict[str, Any]:
    """Prepare (or reuse) the model and bundle of ``config``, then run every worker."""
    from benchmarks.speed.measured import BundleFacts
    from benchmarks.speed.model import prepare_model
    from export.manifest import read_manifest

    started = time.perf_counter()
    prepared = prepare_model(config)
    manifest = read_manifest(prepared.bundle, verify=False)
    spec = worker_spec(config, prepared, out)
    raw: dict[str, Any] = {
        "config": config.to_dict(),
        "prepared": prepared.to_dict(),
        "manifest": BundleFacts.of(manifest).to_dict(),
        "workload": {"images": list(spec.images), "questions": list(spec.questions)},
        "torch": None,
        "exported": {},
        "vision_variants": {},
        "profiles": {},
        "memory_probes": None,
        "errors": [],
        "mix": {},
        "matmul": None,
    }
    jobs = [] if config.mix_only else preset_jobs(config, spec, manifest)
    jobs += mix_jobs(config, spec, manifest, raw)
    for i, job in enumerate(jobs, 1):
        run_job(job, raw, config, f"[{config.preset} {i}/{len(jobs)}]")
    raw["seconds"] = round(time.perf_counter() - started, 1)
    return raw


def worker_spec(config: SpeedConfig, prepared: PreparedModel, out: Path) -> WorkerSpec:
    """What every worker of ``config`` needs: the model, the bundle, the workload, the repetitions."""
    from benchmarks.speed.protocol import WorkerSpec
    from benchmarks.speed.workload import make_workload

    n_images = max(config.images, config.warmup + config.runs, MIX_PHOTOS)
    workload = make_workload(out / "work" / "images", n_images, seed=config.seed)
    return WorkerSpec(
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
        features_dir=str(out / "work" / config.preset / "features"),
    )


def preset_jobs(config: SpeedConfig, spec: WorkerSpec, manifest: Manifest) -> list[Job]:
    """(label, worker, its arguments, where in ``raw`` its result goes) of every measurement."""
    from benchmarks.speed.probes import measure_memory_probes
    from benchmarks.speed.workers import (
        measure_exported,
        measure_profile,
        measure_torch,
        measure_vision_variant,
    )

    jobs: list[Job] = []
    if config.measure_torch:
        jobs.append(Job("torch fp32", measure_torch, (spec,), ("torch",)))
    dv = config.deploy_vision
    for q in [config.deploy_lm, *(q for q in config.all_quants if q != config.deploy_lm)]:
        deploy = q == config.deploy_lm
        args = (spec, q, dv, deploy, config.sweep_threads if deploy else ())
        jobs.append(Job(f"exported {q} + {dv}", measure_exported, args, ("exported", q)))
    for v in (v for v in config.vision if v != dv):
        label = f"vision {v} (+ {config.deploy_lm})"
        jobs.append(Job(label, measure_vision_variant, (spec, config.deploy_lm, v), ("vision_variants", v)))
    for name in config.profiles:
        jobs.append(Job(f"profile {name}", measure_profile, (spec, name), ("profiles", name)))
    # the probes start a process per component themselves
    probes = Job("memory probes", measure_memory_probes, (config, spec, manifest), ("memory_probes",), False)
    jobs.append(probes)
    return jobs


def mix_jobs(config: SpeedConfig, spec: WorkerSpec, manifest: Manifest, raw: dict[str, Any]) -> list[Job]:
    """The question mix answered each way (:mod:`benchmarks.speed.mix`); records the mix in ``raw``."""
    from benchmarks.speed.machine import matmul_peak
    from benchmarks.speed.mix import default_eval_root, measure_mix, mix_groups, questions_per_image

    try:
        per_image = questions_per_image(default_eval_root())
    except ConfigError as exc:
        raw["errors"].append({"task": "question mix", "error": str(exc)})
        return []
    groups = mix_groups(per_image)
    raw["workload"]["mix"] = {"questions_per_image": per_image, "groups": groups}
    modes = [
        m for m in ("torch", "native-one", "native-reuse", "engine") if m != "torch" or config.measure_torch
    ]
    if not manifest.mmproj:
        modes = [m for m in modes if not m.startswith("native")]
        raw["errors"].append(
            {"task": "question mix", "error": "the bundle has no mmproj: libmtmd not measured"}
        )
    mmproj = next(iter(manifest.mmproj), "")
    args = (groups, config.deploy_lm, config.deploy_vision, mmproj, config.mix_sample)
    jobs = [Job(f"question mix, {m}", measure_mix, (spec, m, *args), ("mix", m)) for m in modes]
    return [*jobs, Job("matmul peak", matmul_peak, (config.threads,), ("matmul",))]


def run_job(job: Job, raw: dict[str, Any], config: SpeedConfig, prefix: str) -> None:
    """Run one measurement (each runtime in a process of its own; the memory probes start their own)
    and store its result in ``raw``, or its failure in ``raw["errors"]``."""
    label, fn, args, where, isolated = job
    log.info("%s %s", prefix, label)
    t0 = time.perf_counter()
    try:
        if isolated:
            result = run_isolated(fn, *args, fresh=config.fresh_processes)
        else:
            result = fn(*args)
    except WorkerFailed as exc:
        log.error("%s failed: %s", label, exc)
        raw["errors"].append({"task": label, "error": str(exc)})
    else:
        target = raw
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = result.to_dict() if isinstance(result, Record) else result
    log.info("%s %s done in %.1fs", prefix, label, time.perf_counter() - t0)
