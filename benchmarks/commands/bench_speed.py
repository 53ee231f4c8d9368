"""Measure speed and memory on this machine: PyTorch vs the exported runtime, every quant, vs bare llama.cpp.

  imp bench-speed --tiny                                   (imp-tiny, about a minute: checks it all runs)
  imp bench-speed --preset imp-v1-3b                       (real size, random weights; ~1 h the first time)
  imp bench-speed --preset imp-v1-3b,imp-v1.5-3b-196       (both Imp variants in one run)
  imp bench-speed --preset imp-v1-3b --checkpoint work/ckpt   (a real checkpoint)

Without --checkpoint a random model of the preset's real shape is built and exported once (cached in
--cache, keyed by preset and options). Measured in one invocation, each runtime in its own process:
vision encode per precision, LM prefill/decode per GGUF quant against bare llama.cpp and the memory
bandwidth roofline, first / second-question latency, benchmark throughput, peak RSS, thread sweep,
device profiles, file sizes and export times. Writes OUT/speed.json, OUT/speed.md and
OUT/speed-<preset>.png and prints the targets (target / measured / met?). Figures are noisy on a
shared machine: run the real measurement alone.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.speed.rows import SpeedResults


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in _csv(text))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--preset", default=None, help="preset(s), comma-separated (default imp-v1-3b)")
    parser.add_argument("--checkpoint", help="a real checkpoint folder to measure instead of random weights")
    parser.add_argument(
        "--tiny", action="store_true", help="imp-tiny with small repetitions (seconds; for tests)"
    )
    parser.add_argument("--out", default="work/bench-speed", help="report folder (default work/bench-speed)")
    parser.add_argument("--cache", default="work/bench-speed-cache", help="random checkpoints and bundles")
    parser.add_argument("--quants", help="GGUF precisions (default f16,q8_0,q4_k_m,q4_0)")
    parser.add_argument("--vision", help="ONNX precisions (default fp32,fp16,int8)")
    parser.add_argument("--deploy-lm", help="LM of the deployment pair (default q4_k_m)")
    parser.add_argument("--deploy-vision", help="vision of the deployment pair (default int8)")
    parser.add_argument("--threads", type=int, help="threads of every runtime (default: all usable cores)")
    parser.add_argument("--runs", type=int, help="measured repetitions (median reported; default 3, tiny 2)")
    parser.add_argument("--warmup", type=int, help="discarded repetitions (default 1)")
    parser.add_argument("--answer-tokens", type=int, help="tokens decoded per answer (default 16, tiny 8)")
    parser.add_argument("--images", type=int, help="images in the throughput set (default 2)")
    parser.add_argument(
        "--questions-per-image", type=int, help="questions per image in the throughput set (default 3)"
    )
    parser.add_argument(
        "--sweep", help="thread counts of the sweep, e.g. 1,2 (default 1,2,4..cores); '' = none"
    )
    parser.add_argument("--profiles", help="device profiles to measure (default mobile); '' = none")
    parser.add_argument("--bandwidth-mb", type=int, help="array size of the bandwidth copy (default 1024)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch (needs ~13 GB at real size)")
    parser.add_argument(
        "--mix-only",
        action="store_true",
        help="measure only the real question mix (each runtime vs PyTorch and libmtmd; ~20 min at real size)",
    )
    parser.add_argument(
        "--mix-sample", type=int, help="questions per photo answered one at a time in the mix (default 2)"
    )
    parser.add_argument(
        "--validate-export", action="store_true", help="run the bundle parity checks on export"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the random model and re-export")
    parser.add_argument("--seed", type=int, help="seed of the random weights and images (default 0)")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite the report in --out from its speed.json (no measuring)",
    )
    parser.add_argument(
        "--fresh-processes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each runtime in a newly spawned interpreter: exact peak RSS (default; --tiny forks from a "
        "preloaded server instead, which starts faster but misses ~100 MB of import-time pages)",
    )


def build_configs(args: argparse.Namespace) -> list:
    from pathlib import Path

    from benchmarks.speed.config import SpeedConfig
    from impvlm.errors import ConfigError

    overrides: dict = {
        "cache": Path(args.cache),
        "rebuild": args.rebuild,
        "validate_export": args.validate_export,
    }
    simple = {
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "answer_tokens": args.answer_tokens,
        "images": args.images,
        "questions_per_image": args.questions_per_image,
        "bandwidth_mb": args.bandwidth_mb,
        "seed": args.seed,
        "deploy_lm": args.deploy_lm,
        "deploy_vision": args.deploy_vision,
        "mix_sample": args.mix_sample,
    }
    overrides.update({k: v for k, v in simple.items() if v is not None})
    if args.quants:
        overrides["quants"] = _csv(args.quants)
    if args.vision:
        overrides["vision"] = _csv(args.vision)
    if args.sweep is not None:
        overrides["sweep_threads"] = _ints(args.sweep)
    if args.profiles is not None:
        overrides["profiles"] = _csv(args.profiles)
    if args.no_torch:
        overrides["measure_torch"] = False
    if args.mix_only:
        overrides["mix_only"] = True
    if args.fresh_processes is not None:
        overrides["fresh_processes"] = args.fresh_processes
    presets = _csv(args.preset) if args.preset else (("imp-tiny",) if args.tiny else ("imp-v1-3b",))
    if args.checkpoint:
        if len(presets) != 1:
            raise ConfigError("--checkpoint measures one model: give one --preset (it names the run)")
        overrides["checkpoint"] = Path(args.checkpoint)
    make = SpeedConfig.tiny if args.tiny else SpeedConfig.real
    return [make(preset=p, **overrides) for p in presets]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.speed.bench import rerender, run_speed_benchmark

    if args.rerender:
        results = rerender(Path(args.out))
    else:
        results = run_speed_benchmark(build_configs(args), Path(args.out))
    print_summary(results)
    return 0


def print_summary(results: SpeedResults) -> None:
    """The machine, each preset's targets (target / measured / met?) and where the report went."""
    from benchmarks.speed.report import busy
    from benchmarks.speed.text import fmt, met_text

    m = results.machine
    bandwidth = ", ".join(f"{b.threads}t {b.gb_per_s:.1f} GB/s" for b in results.limits.bandwidth)
    print(f"\n{m.cpu}, {m.cores_usable} cores, {m.memory_gb} GB; bandwidth {bandwidth}")
    if busy(m):
        print(
            f"WARNING: load average {m.load_average[0]:.1f} on {m.cores_usable} cores at start: figures are noisy"
        )
    for preset, section in results.models.items():
        print(f"\n{preset}: target / measured / met?")
        for t in section.targets:
            print(f"  {t.description}: {t.goal} / {t.measured_text} / {met_text(t).strip('*')}")
        deploy = next((r for r in section.latency if r.key.startswith("exported-")), None)
        if deploy:
            print(
                f"  first answer ({deploy.runtime}): TTFT {fmt(deploy.first_ttft_s, 3)} s, total "
                f"{fmt(deploy.first_total_s, 3)} s; second: TTFT {fmt(deploy.second_ttft_s, 3)} s"
            )
        for e in section.errors:
            print(f"  ERROR {e['task']}: {e['error']}")
    paths = results.paths or {}
    print(f"\nreport: {paths.get('markdown')}  json: {paths.get('json')}  ({results.seconds or 0:.0f} s)")
