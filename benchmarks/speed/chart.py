"""One PNG per preset: vision, decode vs bare llama.cpp and the roofline, latency and RSS by stage,
the thread sweep and throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.speed.config import TARGETS
from benchmarks.speed.rows import Machine, PresetReport
from benchmarks.speed.targets import RSS_TARGET_MIN_PARAMS


def write_chart(s: PresetReport, path: Path, preset: str, machine: Machine) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    fig.suptitle(f"{preset} on {machine.cpu} ({machine.cores_usable} cores, {machine.memory_gb} GB)")
    vision_axis(axes[0][0], s)
    decode_axis(axes[0][1], s)
    latency_axis(axes[1][0], s)
    sweep_axis(axes[1][1], s)
    memory_axis(axes[2][0], s)
    throughput_axis(axes[2][1], s)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def vision_axis(ax: Any, s: PresetReport) -> None:
    vis = [r for r in s.vision if r.ms_per_image]
    ax.bar([r.encoder for r in vis], [r.ms_per_image for r in vis], color="tab:blue")
    ax.set_title("vision encode (ms per image, lower is better)")
    ax.set_ylabel("ms")


def decode_axis(ax: Any, s: PresetReport) -> None:
    lm = [r for r in s.lm if r.decode_forward_per_s]
    xs = range(len(lm))
    ax.bar([x - 0.2 for x in xs], [r.decode_forward_per_s for r in lm], width=0.4, label="runtime")
    bare = [r.bare_decode_forward_per_s or 0 for r in lm]
    ax.bar([x + 0.2 for x in xs], bare, width=0.4, label="bare llama.cpp")
    roof = [(x, r.roofline_tokens_per_s) for x, r in zip(xs, lm) if r.roofline_tokens_per_s]
    if roof:
        xs_roof, values = [x for x, _ in roof], [v for _, v in roof]
        ax.scatter(xs_roof, values, marker="_", s=600, color="red", label="bandwidth roofline")
    ax.set_xticks(list(xs), [r.runtime for r in lm], rotation=15)
    ax.set_title("decode (forward passes / s, higher is better)")
    ax.legend(fontsize=8)


def latency_axis(ax: Any, s: PresetReport) -> None:
    lat = [r for r in s.latency if r.first_total_s]
    bottoms = [0.0] * len(lat)
    labels = [r.runtime for r in lat]
    for stage, colour in (
        ("image_encode_s", "tab:green"),
        ("prefill_s", "tab:orange"),
        ("decode_s", "tab:purple"),
        ("other_s", "tab:gray"),
    ):
        vals = [r.first_stages.get(stage) or 0.0 for r in lat]
        ax.barh(labels, vals, left=bottoms, color=colour, label=stage.removesuffix("_s").replace("_", " "))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    second = [(r.runtime, r.second_total_s) for r in lat if r.second_total_s]
    if second:
        values, names = [v for _, v in second], [n for n, _ in second]
        ax.scatter(values, names, marker="|", s=300, color="black", label="second question total")
    ax.set_title("first answer latency by stage (s, lower is better)")
    ax.legend(fontsize=7)


def sweep_axis(ax: Any, s: PresetReport) -> None:
    if s.sweep:
        threads = [r.threads for r in s.sweep]
        ax.plot(threads, [r.prefill_tokens_per_s or 0 for r in s.sweep], marker="o", label="prefill tok/s")
        ax.set_xlabel("threads")
        ax.set_ylabel("prefill tok/s")
        ax2 = ax.twinx()
        decode = [r.decode_forward_per_s or 0 for r in s.sweep]
        ax2.plot(threads, decode, marker="s", color="tab:red", label="decode fwd/s")
        ax2.set_ylabel("decode fwd/s")
        ax.set_xticks(threads)
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("thread sweep (exported deployment pair)")


def memory_axis(ax: Any, s: PresetReport) -> None:
    mem = s.memory
    labels = [r.runtime for r in mem]
    left = [r.baseline_rss_mb for r in mem]
    ax.barh(labels, left, color="tab:gray", label="imports")
    for stage, colour in (("load", "tab:blue"), ("vision", "tab:green"), ("first_answer", "tab:orange")):
        vals = [max(0.0, r.growth_mb.get(stage) or 0.0) for r in mem]
        ax.barh(labels, vals, left=left, color=colour, label=f"+ {stage.replace('_', ' ')}")
        left = [a + b for a, b in zip(left, vals)]
    ax.scatter([r.peak_rss_mb for r in mem], labels, marker="|", s=300, color="black", label="peak")
    if (s.model.lm_parameters or 0) >= RSS_TARGET_MIN_PARAMS:
        ax.axvline(TARGETS["rss_3b"].goal, color="red", linestyle="--", linewidth=1, label="target (3B)")
    ax.set_title("peak RSS by stage (MB, each runtime in its own process)")
    ax.legend(fontsize=7)


def throughput_axis(ax: Any, s: PresetReport) -> None:
    tp = s.throughput
    ax.bar([r.runtime.split(",")[0] for r in tp], [r.questions_per_minute for r in tp], color="tab:cyan")
    ax.set_title("benchmark throughput (questions / minute, higher is better)")
