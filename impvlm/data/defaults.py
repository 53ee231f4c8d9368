"""Sizes of the offline synthetic run, shared by ``imp synth``, ``imp train-tower`` and ``imp pipeline``.

A plain module (no imports) so that the commands' argument parsers can show these defaults cheaply.
Measured on 2 CPU cores: the tiny chain needs many distinct scenes (a fixed pool of 3000 images levels
off near 80% in a plain loop where fresh scenes reach 93%), and 30,000 images take about 25 s to draw.
"""

TRAIN_IMAGES = 30_000
EVAL_IMAGES = 500  # `imp synth`; `imp pipeline` scores 200 images (its eval_images)
TOWER_STEPS = 1000
