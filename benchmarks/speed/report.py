"""Write a speed run: ``speed.json`` (everything), ``speed.md`` (tables) and one PNG chart per preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.speed.analysis import RSS_TARGET_MIN_PARAMS
from benchmarks.speed.config import TARGETS

JSON_FILE = "speed.json"
MD_FILE = "speed.md"


def write_report(results: dict[str, Any], out: Path) -> dict[str, Path]:
    out = Path(out)
    paths = {"json": out / JSON_FILE, "markdown": out / MD_FILE}
    for preset, section in results["models"].items():
        chart = out / f"speed-{preset}.png"
        write_chart(section, chart, preset, results["machine"])
        section["chart"] = chart.name
        paths[f"chart_{preset}"] = chart
    results["paths"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(results, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    return paths


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ------------------------------------------------------------------------------------ markdown
def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _params(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def met_text(row: dict[str, Any]) -> str:
    if not row.get("applies", True):
        return "n/a"
    if row["met"] is None:
        return "reported" if row["goal"] == "reported" else "-"
    return "**yes**" if row["met"] else "**NO**"


def busy(machine: dict[str, Any]) -> bool:
    """Other work was running when the run started (its threads compete with the runtimes')."""
    return machine["load_average"][0] >= 0.5 * machine["cores_usable"]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Speed benchmark",
        "",
        f"Machine: **{m['cpu']}**, {m['cores_usable']} usable cores ({m['cores_physical']} physical), "
        f"{m['memory_gb']} GB RAM; SIMD {', '.join(m['cpu_flags']) or '-'}; load average at start "
        f"{m['load_average'][0]:.2f}, at end {m.get('load_average_end', [0])[0]:.2f}. {m['platform']}, Python "
        f"{m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        "",
        f"Run {results['created']} ({results.get('seconds', 0):.0f} s): `{' '.join(results['command'])}`",
        "",
        "Figures are medians of the measured runs after warm-up; every runtime ran in its own process, one "
        "at a time, and was opened as `imp chat` opens it (bundle files not re-hashed at load). Random "
        "weights do not change the cost of a fixed token count: answers decode a fixed number of tokens "
        "(stop token ignored).",
        *(
            [
                "",
                f"**Warning: the machine was busy when the run started (load average {m['load_average'][0]:.1f} "
                f"on {m['cores_usable']} cores): figures are noisy, ratios unreliable. Run it alone.**",
            ]
            if busy(m)
            else []
        ),
        "",
        "## Machine limits",
        "",
        table(
            ["threads", "copy bandwidth GB/s (median)", "best"],
            [
                [b["threads"], fmt(b["gb_per_s"], 2), fmt(b["gb_per_s_best"], 2)]
                for b in results["limits"]["bandwidth"]
            ],
        ),
        "",
        "Bandwidth counts bytes read + written by a large-array copy. Decode roofline = bandwidth / bytes "
        "of weights read per token (GGUF tensors without the token embeddings).",
    ]
    for preset, s in results["models"].items():
        lines += ["", *preset_markdown(preset, s)]
    return "\n".join(lines) + "\n"


def preset_markdown(preset: str, s: dict[str, Any]) -> list[str]:
    model = s["model"]
    cfg = s["raw"]["config"]
    exp = s["export"]
    lines = [
        f"## {preset}",
        "",
        f"Model: {model['source']} weights, {model['image_tokens']} image tokens ({model['image_size']} px), "
        f"LM {_params(model['lm_parameters'])} parameters, {model['lm_layers']} layers, "
        f"width {model['embedding_width']}, vocab {model['vocab_size']}. Threads {cfg['threads']}, "
        f"{cfg['runs']} runs after {cfg['warmup']} warm-up, {cfg['answer_tokens']} answer tokens. "
        f"Bundle {'exported in this run' if exp['exported_now'] else 'from the cache (exported ' + str(exp['exported_at']) + ')'}: "
        f"`{exp['cache_entry']}`.",
        "",
        *[f"- {n}" for n in s.get("notes", [])],
        "",
        f"![speed chart]({s.get('chart', '')})",
        "",
        "### Targets",
        "",
        table(
            ["target", "goal", "measured", "met?"],
            [[t["description"], t["goal"], t["measured_text"], met_text(t)] for t in s["targets"]],
        ),
    ]
    misses = [t for t in s["targets"] if t["met"] is False]
    if misses:
        lines += ["", "What holds the missed targets back, and what would close the gap:", ""]
        lines += [f"- **{t['description']}**: {t['holds_back']}" for t in misses]
    lines += [
        "",
        "### Vision encoder (ms per image, incl. preprocessing)",
        "",
        table(
            [
                "encoder",
                "ms/image",
                "min-max",
                "preprocess ms",
                "speed-up vs PyTorch",
                "cosine vs PyTorch (mean / min)",
            ],
            [
                [
                    r["encoder"],
                    fmt(r["ms_per_image"]),
                    f"{fmt(r['ms_min'])}-{fmt(r['ms_max'])}",
                    fmt(r["preprocess_ms"]),
                    fmt(r["speedup_vs_torch"], 2, "x"),
                    "-"
                    if not r["cosine_vs_torch"]
                    else f"{r['cosine_vs_torch']['mean']:.5f} / {r['cosine_vs_torch']['min']:.5f}",
                ]
                for r in s["vision"]
            ],
        ),
        "",
        "### Language model (one image + question, prompt incl. image embeddings)",
        "",
        table(
            [
                "runtime",
                "file MB",
                "MB read/token",
                "prefill tok/s",
                "bare prefill",
                "overhead",
                "decode tok/s (Timings)",
                "decode fwd/s",
                "bare decode fwd/s",
                "overhead",
                "roofline tok/s",
                "of roofline",
            ],
            [
                [
                    r["runtime"],
                    fmt(r["file_mb"], 0),
                    fmt(r["mb_read_per_token"], 0),
                    fmt(r["prefill_tokens_per_s"]),
                    fmt(r["bare_prefill_tokens_per_s"]),
                    fmt(r["overhead_prefill_pct"], 1, "%"),
                    fmt(r["decode_tokens_per_s"], 2),
                    fmt(r["decode_forward_per_s"], 2),
                    fmt(r["bare_decode_forward_per_s"], 2),
                    fmt(r["overhead_decode_pct"], 1, "%"),
                    fmt(r["roofline_tokens_per_s"], 2),
                    fmt(None if r["roofline_fraction"] is None else 100 * r["roofline_fraction"], 0, "%"),
                ]
                for r in s["lm"]
            ],
        ),
        "",
        "`decode tok/s (Timings)` is the runtime's own figure (n answer tokens / decode time); `fwd/s` counts "
        "forward passes (n - 1: the first answer token comes from the prefill) and is what bare llama.cpp "
        "and the roofline are compared with.",
        "",
        "### Latency: one image + a benchmark question + answer",
        "",
        table(
            [
                "runtime",
                "threads",
                "first TTFT s",
                "first total s",
                "first: vision / prefill / decode s",
                "vs PyTorch",
                "second TTFT s",
                "second total s",
                "TTFT speed-up (reuse)",
            ],
            [
                [
                    r["runtime"],
                    r["threads"],
                    fmt(r["first_ttft_s"], 3),
                    fmt(r["first_total_s"], 3),
                    " / ".join(
                        fmt(r["first_stages"][k], 2) for k in ("image_encode_s", "prefill_s", "decode_s")
                    ),
                    fmt(r["first_speedup_vs_torch"], 2, "x"),
                    fmt(r["second_ttft_s"], 3),
                    fmt(r["second_total_s"], 3),
                    fmt(r["reuse_ttft_speedup"], 1, "x"),
                ]
                for r in s["latency"]
            ],
        ),
        "",
        "### Benchmark throughput",
        "",
        table(
            ["runtime", "questions", "images", "seconds", "questions/min", "median s/question"],
            [
                [
                    r["runtime"],
                    r["questions"],
                    r["images"],
                    fmt(r["seconds"]),
                    fmt(r["questions_per_minute"], 2),
                    fmt(r["median_question_s"], 2),
                ]
                for r in s["throughput"]
            ],
        ),
        "",
        "### Peak memory (each runtime in its own process)",
        "",
        table(
            [
                "runtime",
                "peak RSS MB",
                "imports MB",
                "+ load",
                "+ vision run",
                "+ first answer",
                "transient",
                "GGUF / ONNX file MB",
                "llama.cpp KV / compute / repack MiB",
            ],
            [
                [
                    r["runtime"],
                    fmt(r["peak_rss_mb"], 0),
                    fmt(r["baseline_rss_mb"], 0),
                    *(fmt(r["growth_mb"].get(k), 0) for k in ("load", "vision", "first_answer")),
                    fmt(r["transient_mb"], 0),
                    f"{fmt(r['lm_file_mb'], 0)} / {fmt(r['vision_file_mb'], 0)}",
                    f"{fmt(r['llama_kv_mib'], 0)} / {fmt(r['llama_compute_mib'], 0)} / {fmt(r['llama_repack_mib'], 0)}",
                ]
                for r in s["memory"]
            ],
        ),
        "",
        "RSS counts the mmapped GGUF pages once they are read. `+ stage` is the growth of the process's RSS "
        "over that stage.",
        *probes_markdown(s.get("memory_probes")),
    ]
    if s["sweep"]:
        lines += [
            "",
            f"### Thread sweep (exported {cfg['deploy_lm']} + {cfg['deploy_vision']})",
            "",
            table(
                ["threads", "vision ms", "prefill tok/s", "decode fwd/s", "first TTFT s", "first total s"],
                [
                    [
                        r["threads"],
                        fmt(r["vision_ms"]),
                        fmt(r["prefill_tokens_per_s"]),
                        fmt(r["decode_forward_per_s"], 2),
                        fmt(r["ttft_s"], 3),
                        fmt(r["total_s"], 3),
                    ]
                    for r in s["sweep"]
                ],
            ),
        ]
    build = exp.get("build") or {}
    bt = exp.get("bundle_timings") or {}
    lines += [
        "",
        "### Files, export and quantize times",
        "",
        table(
            ["kind", "precision", "file", "MB", "export / quantize s"],
            [
                [r["kind"], r["precision"], r["file"], fmt(r["mb"], 1), fmt(r["export_seconds"], 1)]
                for r in s["files"]
            ],
        ),
        "",
        "Bundle timings: "
        + (", ".join(f"{k} {v:.1f}s" for k, v in bt.items()) or "-")
        + (
            "; random model build: "
            + ", ".join(f"{k} {v}" for k, v in build.items() if k.endswith("seconds"))
            if build
            else ""
        )
        + ". Quantize times are llama.cpp's quantizer from the f16 base.",
    ]
    if s["errors"]:
        lines += ["", "### Errors", ""] + [f"- {e['task']}: {e['error']}" for e in s["errors"]]
    return lines


def probes_markdown(probes: dict[str, Any] | None) -> list[str]:
    """The memory probes: each component alone, with the default and the leaner setting."""
    if not probes:
        return []
    rows = [
        ["imports of the exported runtime without torch/transformers", fmt(probes["lean_imports_mb"], 0), ""]
    ]
    for mode, r in (probes.get("llama") or {}).items():
        note = f"CPU_REPACK {fmt(r.get('repack_mib'), 0)} MiB" if r.get("repack_mib") else ""
        rows.append([f"llama.cpp model load, {mode.replace('_', ' ')}", fmt(r["rss_growth_mb"], 0), note])
    for precision, modes in (probes.get("onnx") or {}).items():
        for mode, r in modes.items():
            rows.append(
                [
                    f"ONNX Runtime vision {precision}, {'prepacked weights' if mode == 'default' else 'no prepacking'}",
                    fmt(r["rss_growth_mb"], 0),
                    f"batch-1 run {fmt(r['run_s'], 2)} s",
                ]
            )
    return [
        "",
        "Memory probes (each component alone, in its own process):",
        "",
        table(["component", "MB", "note"], rows),
    ]


# ------------------------------------------------------------------------------------ chart
def write_chart(s: dict[str, Any], path: Path, preset: str, machine: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    fig.suptitle(f"{preset} on {machine['cpu']} ({machine['cores_usable']} cores, {machine['memory_gb']} GB)")

    ax = axes[0][0]
    vis = [r for r in s["vision"] if r["ms_per_image"]]
    ax.bar([r["encoder"] for r in vis], [r["ms_per_image"] for r in vis], color="tab:blue")
    ax.set_title("vision encode (ms per image, lower is better)")
    ax.set_ylabel("ms")

    ax = axes[0][1]
    lm = [r for r in s["lm"] if r["decode_forward_per_s"]]
    xs = range(len(lm))
    ax.bar([x - 0.2 for x in xs], [r["decode_forward_per_s"] for r in lm], width=0.4, label="runtime")
    ax.bar(
        [x + 0.2 for x in xs],
        [r["bare_decode_forward_per_s"] or 0 for r in lm],
        width=0.4,
        label="bare llama.cpp",
    )
    roof = [(x, r["roofline_tokens_per_s"]) for x, r in zip(xs, lm) if r["roofline_tokens_per_s"]]
    if roof:
        ax.scatter(
            [x for x, _ in roof],
            [v for _, v in roof],
            marker="_",
            s=600,
            color="red",
            label="bandwidth roofline",
        )
    ax.set_xticks(list(xs), [r["runtime"] for r in lm], rotation=15)
    ax.set_title("decode (forward passes / s, higher is better)")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    lat = [r for r in s["latency"] if r["first_total_s"]]
    bottoms = [0.0] * len(lat)
    labels = [r["runtime"] for r in lat]
    for stage, colour in (
        ("image_encode_s", "tab:green"),
        ("prefill_s", "tab:orange"),
        ("decode_s", "tab:purple"),
        ("other_s", "tab:gray"),
    ):
        vals = [r["first_stages"].get(stage) or 0.0 for r in lat]
        ax.barh(labels, vals, left=bottoms, color=colour, label=stage.removesuffix("_s").replace("_", " "))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    second = [(r["runtime"], r["second_total_s"]) for r in lat if r["second_total_s"]]
    if second:
        ax.scatter(
            [v for _, v in second],
            [n for n, _ in second],
            marker="|",
            s=300,
            color="black",
            label="second question total",
        )
    ax.set_title("first answer latency by stage (s, lower is better)")
    ax.legend(fontsize=7)

    ax = axes[1][1]
    sweep = s["sweep"]
    if sweep:
        threads = [r["threads"] for r in sweep]
        ax.plot(threads, [r["prefill_tokens_per_s"] or 0 for r in sweep], marker="o", label="prefill tok/s")
        ax.set_xlabel("threads")
        ax.set_ylabel("prefill tok/s")
        ax2 = ax.twinx()
        ax2.plot(
            threads,
            [r["decode_forward_per_s"] or 0 for r in sweep],
            marker="s",
            color="tab:red",
            label="decode fwd/s",
        )
        ax2.set_ylabel("decode fwd/s")
        ax.set_xticks(threads)
        ax.legend(loc="upper left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("thread sweep (exported deployment pair)")

    ax = axes[2][0]
    mem = s["memory"]
    labels = [r["runtime"] for r in mem]
    left = [r["baseline_rss_mb"] for r in mem]
    ax.barh(labels, left, color="tab:gray", label="imports")
    for stage, colour in (("load", "tab:blue"), ("vision", "tab:green"), ("first_answer", "tab:orange")):
        vals = [max(0.0, r["growth_mb"].get(stage) or 0.0) for r in mem]
        ax.barh(labels, vals, left=left, color=colour, label=f"+ {stage.replace('_', ' ')}")
        left = [a + b for a, b in zip(left, vals)]
    ax.scatter([r["peak_rss_mb"] for r in mem], labels, marker="|", s=300, color="black", label="peak")
    if (s["model"]["lm_parameters"] or 0) >= RSS_TARGET_MIN_PARAMS:
        ax.axvline(TARGETS["rss_3b"].goal, color="red", linestyle="--", linewidth=1, label="target (3B)")
    ax.set_title("peak RSS by stage (MB, each runtime in its own process)")
    ax.legend(fontsize=7)

    ax = axes[2][1]
    tp = s["throughput"]
    ax.bar(
        [r["runtime"].split(",")[0] for r in tp], [r["questions_per_minute"] for r in tp], color="tab:cyan"
    )
    ax.set_title("benchmark throughput (questions / minute, higher is better)")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
