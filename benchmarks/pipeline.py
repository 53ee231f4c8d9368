"""`imp pipeline`: the offline end-to-end job, one cached stage at a time.

By default it starts from the tiny Imp the package ships (``impvlm.pretrained``, trained by this
pipeline's own training stages): synthetic nine-benchmark suite -> export (ONNX fp32 + int8, GGUF f16 /
q8_0 / q4_k_m, llama.cpp mmproj) -> the suite on PyTorch and on every exported variant -> the
cross-runtime comparison report. ``--train`` runs the whole chain from scratch first: synthetic world
-> train the tiny preset (warm-up, stage 1, stage 2 LoRA) -> merge -> held-out accuracy.

Every stage writes its outputs under the work folder and a ``.stage.json`` with the fingerprint of
its inputs (its options and the fingerprints of the stages it reads). A stage whose fingerprint is
unchanged is skipped; a changed one is redone from scratch; a crashed one resumes (training from
its last checkpoint, benchmarks from their answer files). With ``--checkpoint`` (and optionally
``--bench-data``) the same pipeline runs on a user's own model and benchmark folders.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.base import BENCHMARK_NAMES
from benchmarks.stages import StageResult, Stages
from impvlm.data.defaults import TOWER_STEPS, TRAIN_IMAGES
from impvlm.errors import ConfigError

#: Images per synthetic benchmark of the default run. Each benchmark gets about 750 scoring units
#: (questions; MME images, MMBench circular groups), so that with no answer changed the suite verdict
#: of a near-lossless candidate (mean drop within 0.2 pt, every claim of the report in one Holm
#: family) is decided: its worst case puts every undetected change on the benchmark where one unit
#: weighs most (POPE: one answer moves its split's F1 about twice as far, so 1,800 questions).
#: Questions per image: VQAv2 / GQA 3, VizWiz 1, ScienceQA 1 + 1 text-only, TextVQA
#: about 1.5, POPE 18, MME 2, MMBench 1 (3 circular rows), MM-Vet 2.
BENCH_IMAGES: dict[str, int] = {
    "vqav2": 250,
    "gqa": 250,
    "vizwiz": 750,
    "sqa": 750,
    "textvqa": 500,
    "pope": 100,
    "mme": 400,
    "mmbench": 750,
    "mmvet": 375,
}


@dataclass
class PipelineConfig:
    """Options of the end-to-end pipeline (defaults: the offline synthetic run)."""

    work: Path = Path("work")
    seed: int = 0
    train: bool = False  # train the tiny model from scratch instead of starting from the shipped one
    train_images: int = TRAIN_IMAGES
    eval_images: int = 200
    bench_images: int | dict[str, int] = field(default_factory=lambda: dict(BENCH_IMAGES))
    tower_steps: int = TOWER_STEPS  # the tiny tower's pretraining on the synthetic world (imp train-tower)
    eval_limit: int | None = 600  # held-out questions for the trained model's exact-answer accuracy
    recipes: tuple[str, ...] = ("tiny-warmup", "tiny-pretrain", "tiny-lora")
    train_overrides: dict[str, Any] = field(default_factory=dict)
    gguf: tuple[str, ...] = ("f16", "q8_0", "q4_k_m")
    onnx: tuple[str, ...] = ("fp32", "int8")
    mmproj: tuple[str, ...] = ("f16",)  # llama.cpp-native vision; each is run with the first GGUF type
    benchmarks: tuple[str, ...] = BENCHMARK_NAMES
    limit: int | None = None
    max_new_tokens: int | None = 32
    threads: int | None = None
    jobs: int = 2  # benchmark runs at once, each in its own process
    checkpoint: Path | None = None  # the user's own merged checkpoint: skip synthetic + training
    data: Path | None = None  # the user's own LLaVA-format training folder (instruct.json etc.)
    bench_data: Path | None = None  # the user's own playground/data/eval folder
    progress: bool = True

    def __post_init__(self) -> None:
        if self.train and self.checkpoint is not None:
            raise ConfigError("--train trains a model and --checkpoint gives one: use one of them")
        if self.data is not None and not self.train:
            raise ConfigError("--data is a training folder: add --train to train on it")


class Pipeline(Stages):
    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print) -> None:
        super().__init__(Path(config.work), log)
        self.config = config

    # ------------------------------------------------------------------ stages
    def run(self) -> dict[str, Any]:
        checkpoint = self.checkpoint()
        bench_data = self.bench_data()
        bundle = self.export(checkpoint)
        runs = self.benchmarks(checkpoint, bundle, bench_data)
        report = self.compare(runs)
        summary = {
            "wall_seconds": time.perf_counter() - self.started,
            "stages": {k: asdict(v) for k, v in self.results.items()},
            "report": report.outputs,
        }
        (self.work / "pipeline.json").write_text(json.dumps(summary, indent=2))
        return summary

    def checkpoint(self) -> StageResult:
        """The model every later stage reads: trained here (``train``), the user's, or the shipped one."""
        c = self.config
        if c.train:
            return self.train_and_merge(self.synthetic_world())
        if c.checkpoint is not None:
            path = str(Path(c.checkpoint).resolve())
            return self.stage("checkpoint", {"path": path}, lambda folder: {"checkpoint": path})
        from impvlm.checkpoint import checkpoint_hash
        from impvlm.pretrained import TINY_SYNTHETIC, read_card, shipped_checkpoint

        path = shipped_checkpoint(TINY_SYNTHETIC)
        card = read_card(TINY_SYNTHETIC)
        held = card["held_out"]
        self.log(
            f"starting from the shipped {TINY_SYNTHETIC} ({path}): held-out exact-answer accuracy "
            f"{100 * held['overall']:.1f}% of {held['n']} questions; `--train` trains one from scratch"
        )
        # the package's copy may change with the installed version: its hash is an input
        inputs = {"shipped": TINY_SYNTHETIC, "sha256": checkpoint_hash(path)}
        return self.stage("checkpoint", inputs, lambda folder: {"checkpoint": str(path)})

    def synthetic_world(self) -> StageResult:
        c = self.config
        if c.data is not None:
            return self.stage(
                "data",
                {"path": str(Path(c.data).resolve())},
                lambda folder: {
                    "root": str(Path(c.data).resolve()),
                    "tokenizer": str(Path(c.data).resolve() / "tokenizer"),
                },
            )

        from impvlm.train.tower import TowerTraining, pretrain_tower

        tower = TowerTraining(steps=c.tower_steps, seed=c.seed)

        def build(folder: Path) -> dict[str, str]:
            from impvlm.data.synthetic import WorldConfig, generate_dataset
            from impvlm.tokenizer import build_corpus, train_tokenizer

            generate_dataset(
                folder, c.train_images, c.eval_images, WorldConfig(seed=c.seed), progress=c.progress
            )
            train_tokenizer(build_corpus(folder), 1024, folder / "tokenizer")
            # the tiny-warmup recipe loads its frozen tower from data.root/tower
            pretrain_tower(folder, folder / "tower", tower, progress=c.progress)
            return {
                "root": str(folder),
                "tokenizer": str(folder / "tokenizer"),
                "tower": str(folder / "tower"),
            }

        return self.stage(
            "synthetic",
            {"seed": c.seed, "train": c.train_images, "eval": c.eval_images, "tower": asdict(tower)},
            build,
        )

    def train_and_merge(self, world: StageResult) -> StageResult:
        from impvlm.train import merge_checkpoint, run_training

        c = self.config
        overrides = {"data.root": world.outputs["root"], **c.train_overrides}

        def train(folder: Path) -> dict[str, str]:
            out = None
            # progress bars are not an input of the stage: kept out of its fingerprint
            run_overrides = {"train.progress": c.progress, **overrides}
            for recipe in c.recipes:  # one run folder: each stage finds the previous one there
                out = run_training(recipe, folder / "run", run_overrides, resume=True)
            return {"output": str(out)}

        trained = self.stage(
            "train", {"recipes": c.recipes, "overrides": overrides, "after": world.fingerprint}, train
        )

        def merge(folder: Path) -> dict[str, str]:
            out = merge_checkpoint(trained.outputs["output"], folder / "checkpoint")
            return {"checkpoint": str(out)}

        merged = self.stage("merge", {"after": trained.fingerprint}, merge)
        self._held_out_accuracy(merged, world)
        return merged

    def _held_out_accuracy(self, merged: StageResult, world: StageResult) -> None:
        from impvlm.train.evaluate import exact_accuracy, format_accuracy

        marker = self.work / "merge" / "held_out_accuracy.json"
        if marker.exists():
            return
        root = Path(world.outputs["root"])
        result = exact_accuracy(
            merged.outputs["checkpoint"], root / "eval.json", root, limit=self.config.eval_limit
        )
        marker.write_text(json.dumps(result, indent=2))
        self.log(f"held-out {format_accuracy(result)}")

    def bench_data(self) -> StageResult:
        c = self.config
        if c.bench_data is not None:
            path = str(Path(c.bench_data).resolve())
            return self.stage("bench-data", {"path": path}, lambda folder: {"root": path})

        def build(folder: Path) -> dict[str, str]:
            from benchmarks.synthetic import write_synthetic_suite

            write_synthetic_suite(folder / "eval", c.bench_images, seed=c.seed + 1234, progress=c.progress)
            return {"root": str(folder / "eval")}

        return self.stage("bench-data", {"images": c.bench_images, "seed": c.seed}, build)

    def export(self, checkpoint: StageResult) -> StageResult:
        from export.bundle import export_bundle

        c = self.config

        def build(folder: Path) -> dict[str, str]:
            export_bundle(
                Path(checkpoint.outputs["checkpoint"]),
                folder / "bundle",
                gguf=list(c.gguf),
                onnx=list(c.onnx),
                threads=c.threads,
                mmproj=list(c.mmproj),
                progress=c.progress,
            )
            return {"bundle": str(folder / "bundle")}

        inputs = {"gguf": c.gguf, "onnx": c.onnx, "mmproj": c.mmproj, "after": checkpoint.fingerprint}
        return self.stage("export", inputs, build)

    def variants(self) -> list[tuple[str, str]]:
        return [(lm, vision) for lm in self.config.gguf for vision in self.config.onnx]

    def benchmarks(
        self, checkpoint: StageResult, bundle: StageResult, data: StageResult
    ) -> list[StageResult]:
        c = self.config
        specs = [("torch", f"torch:{checkpoint.outputs['checkpoint']}", {})]
        specs += [
            (f"{lm}+{vision}", f"exported:{bundle.outputs['bundle']}", {"lm": lm, "vision": vision})
            for lm, vision in self.variants()
        ]
        specs += [
            (
                f"native-{c.gguf[0]}+mmproj-{p}",
                f"native:{bundle.outputs['bundle']}",
                {"lm": c.gguf[0], "mmproj": p},
            )
            for p in c.mmproj
            if c.gguf
        ]
        # runs at once share the cores: one thread each unless --threads says otherwise
        threads = c.threads if c.threads is not None or c.jobs < 2 else 1
        options = {
            "limit": c.limit,
            "max_new_tokens": c.max_new_tokens,
            "progress": c.progress and c.jobs < 2,
        }
        jobs = []
        for label, spec, opts in specs:
            inputs = {
                "spec": label,
                "after": checkpoint.fingerprint if label == "torch" else bundle.fingerprint,
                "data": data.fingerprint,
                "benchmarks": c.benchmarks,
                "limit": c.limit,
                "max_new_tokens": c.max_new_tokens,
            }
            args = (spec, opts, threads, c.benchmarks, data.outputs["root"], options)
            jobs.append((f"runs/{label}", inputs, (run_benchmarks, args)))
        return self.stages_at_once(jobs, c.jobs)

    def compare(self, runs: list[StageResult]) -> StageResult:
        from benchmarks.compare import compare_runs
        from benchmarks.compare_report import verdict_table, write_report

        def build(folder: Path) -> dict[str, str]:
            report = compare_runs(Path(runs[0].outputs["run"]), [Path(r.outputs["run"]) for r in runs[1:]])
            paths = write_report(report, folder)
            (folder / "verdict.md").write_text(verdict_table(report) + "\n")
            return {"report": str(paths["md"]), "holds": str(report["holds"]), "decision": report["decision"]}

        return self.stage("report", {"runs": [r.fingerprint for r in runs]}, build)


def run_benchmarks(
    folder: Path,
    spec: str,
    opts: dict[str, Any],
    threads: int | None,
    benchmarks: tuple[str, ...],
    data_root: str,
    options: dict[str, Any],
) -> dict[str, str]:
    """One runtime's benchmark stage (a worker process runs it): the suite's answers under ``folder``."""
    from benchmarks.runner import BenchmarkRunOptions, run_suite
    from runtimes.loader import load_runtime

    with load_runtime(spec, threads=threads, **opts) as runtime:
        run_suite(runtime, benchmarks, Path(data_root), folder, BenchmarkRunOptions(**options))
    return {"run": str(folder)}
