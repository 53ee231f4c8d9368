"""generate_many: the questions about one image decoded together give the one-at-a-time answers.

Every runtime answers each image's questions of the nine synthetic benchmarks twice, one question at
a time (``generate``, as stock llama.cpp and upstream Imp do) and all together (``generate_many``:
the prefix prefilled once and shared, the questions prefilled in one batch and decoded in one
batch). PyTorch gives the same answers. llama.cpp's CPU kernels sum a one-row matrix product
(decoding one question) in another order than a many-row one: f32 by float32 rounding (~1e-5 of a
logit), f16 by ~5e-4, q4_k_m's repacked rows by ~2e-2. So the f32 GGUF may part from the
one-at-a-time answer only at an exact tie (a top-2 gap at float32 rounding, seen once in ~130
answers on one tiny model), and f16, the native path and q4_k_m only at a near-tie within their
rounding.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from logit_gaps import GapExported, GapNative, GapTorch, partings

from benchmarks import BENCHMARK_NAMES, get_benchmark
from benchmarks.answer_groups import same_image_groups
from benchmarks.run_inputs import read_run_info
from benchmarks.runner import BenchmarkRunOptions, group_by_image, run_suite
from benchmarks.synthetic import write_synthetic_suite
from runtimes.exported import ExportedRuntime
from runtimes.loader import load_runtime

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python"
)
MAX_NEW_TOKENS = 8
#: top-2 logit gap within which another batch shape's rounding may pick the other token
TIE = {"f32": 1e-4, "f16": 0.01, "q4_k_m": 0.05}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_synthetic_suite(tmp_path_factory.mktemp("batched") / "eval", 4, seed=3, progress=False)


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("batched") / "bundle"
    export_bundle(
        tiny_checkpoint, out, gguf=["f32", "f16", "q4_k_m"], onnx=["fp32"], mmproj=["f16"], threads=1
    )
    return out


def image_groups(suite: Path) -> list[tuple[str, list, list[str], int]]:
    """``(benchmark, images, questions, token limit)`` of each image (VizWiz and ScienceQA have one
    question per image: ``generate_many`` then is ``generate``)."""
    groups = []
    for name in BENCHMARK_NAMES:
        bench = get_benchmark(name)
        questions = group_by_image(bench.load(suite))
        for group, images, limit in same_image_groups(
            questions, bench.image_dir(suite), True, MAX_NEW_TOKENS
        ):
            groups.append((name, images, [q.text for q in group], limit))
    return groups


def batch_partings(runtime, groups) -> tuple[int, list[tuple[str, float]], set[int]]:
    """Answers compared, ``(benchmark, gap)`` where a batched answer parts from the one-at-a-time one
    (the one-at-a-time top-2 gap at the first differing token), and the batch sizes seen."""
    compared, parted, sizes = 0, [], set()
    for name, images, questions, limit in groups:
        alone = []
        for question in questions:
            out = runtime.generate(images, question, max_new_tokens=limit)
            alone.append((out.token_ids, runtime.gaps))
        together = runtime.generate_many(images, questions, limit)
        sizes.update(out.timings.batch_size for out in together)
        compared += len(together)
        parted += [(name, gap) for gap in partings(alone, [out.token_ids for out in together])]
    return compared, parted, sizes


def test_pytorch_answers_equal_one_at_a_time_f32_gguf_up_to_float32_ties(tiny_checkpoint, bundle, suite):
    groups = image_groups(suite)
    assert {name for name, *_ in groups} == set(BENCHMARK_NAMES)
    for runtime, ties in (
        (GapTorch(tiny_checkpoint, threads=1), 0),
        (GapExported(bundle, lm="f32", vision="fp32", threads=1), 1),
    ):
        with runtime:
            compared, parted, sizes = batch_partings(runtime, groups)
        assert compared >= 100 and max(sizes) > 2, runtime.name
        assert len(parted) <= ties and all(gap < TIE["f32"] for _, gap in parted), (runtime.name, parted)


@pytest.mark.parametrize("kind, lm", [("exported", "f16"), ("native", "f16"), ("exported", "q4_k_m")])
def test_f16_native_and_q4_answers_part_only_at_near_ties(bundle, suite, kind, lm):
    runtime = (
        GapNative(bundle, lm=lm, mmproj="f16", threads=1)
        if kind == "native"
        else GapExported(bundle, lm=lm, vision="fp32", threads=1)
    )
    with runtime:
        compared, parted, _ = batch_partings(runtime, image_groups(suite))
    assert all(gap < TIE[lm] for _, gap in parted), parted
    if lm == "f16":  # measured on this random model: exported 1, native 0 to 2 of about 140 answers
        assert len(parted) <= 0.02 * compared


def test_a_follow_up_question_prefills_only_its_own_tokens_in_one_call(bundle, suite):
    _, images, questions, _ = next(g for g in image_groups(suite) if len(g[2]) > 1)
    with ExportedRuntime(bundle, lm="f32", vision="fp32", threads=1) as runtime:
        first = runtime.generate(images, questions[0], max_new_tokens=4)
        second = runtime.generate(images, questions[1], max_new_tokens=4)
        own = len(runtime.tokenize(questions[1]))
    t1, t2 = first.timings, second.timings
    assert t2.images_encoded == 0 and t2.reused_tokens >= runtime.num_image_tokens
    assert 0 < t2.prefill_tokens <= own + 8 and t2.prefill_tokens <= runtime._lm.n_batch  # one llama_decode
    assert t2.ttft_s < t1.ttft_s


def test_imp_bench_decodes_each_images_questions_together_and_records_it(
    tiny_checkpoint, bundle, suite, tmp_path
):
    runs = {}
    for spec in (tiny_checkpoint, f"exported:{bundle}?lm=f32&vision=fp32"):
        for max_batch in (None, 1):
            out = tmp_path / f"run{len(runs)}"
            options = BenchmarkRunOptions(limit=12, max_new_tokens=3, progress=False, max_batch=max_batch)
            with load_runtime(spec, threads=1) as runtime:
                run_suite(runtime, ["pope", "gqa"], suite, out, options)
            runs[str(spec), max_batch] = {name: answers(out / name) for name in ("pope", "gqa")}
            assert read_run_info(out)["decoding"] == "batched per image"
    for (spec, max_batch), by_name in runs.items():
        for name, records in by_name.items():
            sizes = {r["metadata"]["batch_size"] for r in records}
            assert sizes == {1} if max_batch == 1 else max(sizes) > 1
            alone = runs[spec, 1][name]
            assert [r["text"] for r in records] == [r["text"] for r in alone]


def answers(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
