"""From raw worker measurements to one preset's :class:`~benchmarks.speed.rows.PresetReport`.

The sections are derived by :mod:`benchmarks.speed.encode` (files, vision, LM), :mod:`~benchmarks.speed.timing`
(latency, throughput, sweep), :mod:`~benchmarks.speed.memory` (peak RSS) and
:mod:`~benchmarks.speed.targets` (target verdicts); this module puts them together.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.speed.config import SpeedConfig, usable_cores
from benchmarks.speed.encode import export_facts, file_rows, lm_rows, model_facts, vision_rows
from benchmarks.speed.machine import gguf_decode_bytes
from benchmarks.speed.measured import Measured
from benchmarks.speed.memory import memory_rows
from benchmarks.speed.rows import LatencyRow, Limits, ModelFacts, PresetReport
from benchmarks.speed.targets import targets
from benchmarks.speed.timing import latency_rows, sweep_rows, throughput_rows


def analyze(raw: dict[str, Any], limits: Limits, config: SpeedConfig) -> PresetReport:
    """The report section of one preset."""
    m = Measured.from_dict(raw)
    manifest = m.manifest
    bundle = Path(m.prepared["bundle"])
    decode_bytes = {q: gguf_decode_bytes(bundle / e.file) for q, e in manifest.lm.items()}
    bw = limits.at(config.threads)
    model = model_facts(m, decode_bytes)
    latency = latency_rows(m, config)
    sections = dict(
        model=model,
        files=file_rows(manifest),
        export=export_facts(m),
        vision=vision_rows(m, config),
        lm=lm_rows(m, config, decode_bytes, bw),
        latency=latency,
        throughput=throughput_rows(m, config),
        memory=memory_rows(m, config),
        sweep=sweep_rows(m, config),
        memory_probes=m.memory_probes,
        bandwidth_gb_per_s=None if bw is None else bw.gb_per_s,
        errors=m.errors,
        seconds=m.seconds,
    )
    report = PresetReport(**sections, targets=[], notes=[], raw=raw)
    return replace(report, targets=targets(report, config), notes=notes(model, latency, config))


def notes(model: ModelFacts, latency: list[LatencyRow], config: SpeedConfig) -> list[str]:
    """Facts of the run a reader needs to read the figures right."""
    out = []
    cores = usable_cores()
    for row in latency:
        if row.key.startswith("profile-") and (row.threads or 0) > cores:
            out.append(f"{row.runtime} ran {row.threads} threads on {cores} usable cores.")
    if not config.measure_torch:
        out.append("PyTorch was not measured (--no-torch).")
    if model.source == "random":
        out.append("Random weights: feature cosines are those of N(0, 0.02) weights, not of a trained model.")
    return out
