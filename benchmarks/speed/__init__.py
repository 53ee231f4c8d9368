"""``imp bench-speed``: how fast and how large each runtime is on this machine, and why.

Modules, in the order a run uses them:

- :mod:`~benchmarks.speed.config`: :class:`SpeedConfig` (what to measure) and the targets;
- :mod:`~benchmarks.speed.model`: the model under test (a real checkpoint, or a random model of a
  preset's real shape) and its exported bundle, cached;
- :mod:`~benchmarks.speed.workload`: photo-sized images and typical benchmark questions;
- :mod:`~benchmarks.speed.machine`: CPU facts, memory bandwidth, bytes read per decoded token;
- :mod:`~benchmarks.speed.isolate` / :mod:`~benchmarks.speed.workers`: each runtime measured in its own
  process through ``Runtime.generate`` (:mod:`~benchmarks.speed.protocol`), bare llama.cpp next to it
  (:mod:`~benchmarks.speed.bare`), and the memory probes (:mod:`~benchmarks.speed.probes`);
- :mod:`~benchmarks.speed.measured` / :mod:`~benchmarks.speed.rows`: typed records of what the workers
  measure and what the analysis derives, with one JSON path (:mod:`~benchmarks.speed.record`);
- :mod:`~benchmarks.speed.analysis`: the rows (:mod:`~benchmarks.speed.encode`,
  :mod:`~benchmarks.speed.timing`, :mod:`~benchmarks.speed.memory`) and the target verdicts
  (:mod:`~benchmarks.speed.targets`);
- :mod:`~benchmarks.speed.report`: JSON, markdown (:mod:`~benchmarks.speed.tables`) and a PNG chart
  (:mod:`~benchmarks.speed.chart`).

Entry point: :func:`benchmarks.speed.bench.run_speed_benchmark` (``imp bench-speed``). Heavy
dependencies are imported inside functions, so importing this package is cheap.

The real-size measurement (run it alone on the machine; everything is measured in one invocation)::

    imp bench-speed --preset imp-v1-3b                      # -> work/bench-speed/speed.{json,md}, speed-imp-v1-3b.png
    imp bench-speed --preset imp-v1-3b,imp-v1.5-3b-196      # both Imp variants, one report

The first run builds the random fp16 checkpoint (6 GB) and exports it (ONNX fp32/fp16/int8 + GGUF
f16/q8_0/q4_k_m/q4_0, 14 GB) into ``work/bench-speed-cache/`` (about 20 GB of disk per preset; the
export needs ~18 GB of free RAM, the PyTorch fp32 runtime ~14 GB); later runs reuse the cache.
``--tiny`` runs the same code on ``imp-tiny`` in about a minute (the test suite does).
"""
