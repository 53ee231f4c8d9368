"""Write a speed run: ``speed.json`` (everything), ``speed.md`` (tables) and one PNG chart per preset."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.speed.rows import Machine, SpeedResults
from benchmarks.speed.tables import preset_markdown
from benchmarks.speed.text import fmt, table

JSON_FILE = "speed.json"
MD_FILE = "speed.md"


def write_report(results: SpeedResults, out: Path) -> SpeedResults:
    """Write the chart of each preset, then ``speed.json`` and ``speed.md``; the results with their paths."""
    from benchmarks.speed.chart import write_chart

    out = Path(out)
    paths = {"json": out / JSON_FILE, "markdown": out / MD_FILE}
    models = {}
    for preset, section in results.models.items():
        chart = out / f"speed-{preset}.png"
        write_chart(section, chart, preset, results.machine)
        models[preset] = replace(section, chart=chart.name)
        paths[f"chart_{preset}"] = chart
    results = replace(results, models=models, paths={k: str(v) for k, v in paths.items()})
    text = json.dumps(results.to_dict(), indent=2, default=_jsonable) + "\n"
    paths["json"].write_text(text, encoding="utf-8")
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    return results


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def busy(machine: Machine) -> bool:
    """Other work was running when the run started (its threads compete with the runtimes')."""
    return machine.load_average[0] >= 0.5 * machine.cores_usable


def machine_line(m: Machine) -> str:
    end = (m.load_average_end or [0.0])[0]
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items() if v)
    return (
        f"Machine: **{m.cpu}**, {m.cores_usable} usable cores ({m.cores_physical} physical), "
        f"{m.memory_gb} GB RAM; SIMD {', '.join(m.cpu_flags) or '-'}; load average at start "
        f"{m.load_average[0]:.2f}, at end {end:.2f}. {m.platform}, Python {m.python}, {versions}."
    )


def markdown(results: SpeedResults) -> str:
    m = results.machine
    lines = [
        "# Speed benchmark",
        "",
        machine_line(m),
        "",
        f"Run {results.created} ({results.seconds or 0:.0f} s): `{' '.join(results.command)}`",
        "",
        "Figures are medians of the measured runs after warm-up; each runtime ran in its own process, one "
        "at a time; every answer decodes a fixed number of tokens.",
    ]
    if busy(m):
        lines += [
            "",
            f"**Warning: the machine was busy when the run started (load average {m.load_average[0]:.1f} "
            f"on {m.cores_usable} cores): figures are noisy, ratios unreliable. Run it alone.**",
        ]
    lines += [
        "",
        "## Machine limits",
        "",
        table(
            ["threads", "copy bandwidth GB/s (median)", "best"],
            [[b.threads, fmt(b.gb_per_s, 2), fmt(b.gb_per_s_best, 2)] for b in results.limits.bandwidth],
        ),
        "",
        "Bandwidth counts bytes read + written by a large-array copy. Decode roofline = bandwidth / bytes "
        "of weights read per token (GGUF tensors without the token embeddings).",
    ]
    for preset, s in results.models.items():
        lines += ["", *preset_markdown(preset, s)]
    return "\n".join(lines) + "\n"
