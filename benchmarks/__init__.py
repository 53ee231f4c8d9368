"""Scoring half of the nine-benchmark suite Imp and LLaVA-1.5 report.

``get_benchmark(name)`` returns a :class:`~benchmarks.base.Benchmark` that loads its questions from
LLaVA's ``playground/data/eval`` layout and scores a dict of answers, reproducing the official
evaluators (see ``shared/reference/benchmarks.md``). Pure Python: importing this package loads no
benchmark module, no torch and no optional dependency.
"""

from benchmarks.base import (
    BENCHMARK_NAMES,
    REGISTRY,
    Benchmark,
    BenchmarkDataError,
    BenchmarkError,
    BenchmarkResult,
    Question,
    SampleScore,
    UnknownBenchmarkError,
    get_benchmark,
    load_answer_file,
    map_llava_answers,
)

__all__ = [
    "BENCHMARK_NAMES",
    "REGISTRY",
    "Benchmark",
    "BenchmarkDataError",
    "BenchmarkError",
    "BenchmarkResult",
    "Question",
    "SampleScore",
    "UnknownBenchmarkError",
    "get_benchmark",
    "load_answer_file",
    "map_llava_answers",
]
