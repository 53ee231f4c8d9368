"""``imp bench-speed``: how fast and how large each runtime is on this machine, and why.

Modules, in the order a run uses them:

- :mod:`~benchmarks.speed.config`: :class:`SpeedConfig` (what to measure) and the issue's targets;
- :mod:`~benchmarks.speed.model`: the model under test (a real checkpoint, or a random model of a
  preset's real shape) and its exported bundle, cached;
- :mod:`~benchmarks.speed.workload`: photo-sized images and typical benchmark questions;
- :mod:`~benchmarks.speed.machine`: CPU facts, memory bandwidth, bytes read per decoded token;
- :mod:`~benchmarks.speed.isolate` / :mod:`~benchmarks.speed.workers`: each runtime measured in its own
  process through ``Runtime.generate`` (and bare llama.cpp next to it);
- :mod:`~benchmarks.speed.analysis` / :mod:`~benchmarks.speed.report`: ratios, targets, what holds a
  missed target back; JSON, markdown and a PNG chart.

Entry point: :func:`benchmarks.speed.bench.run_speed_benchmark` (``imp bench-speed``). Heavy
dependencies are imported inside functions, so importing this package is cheap.
"""
