"""The offline synthetic "shapes" world.

Nothing pretrained is available offline, so the offline pipeline trains a tiny Imp on a world small
enough to learn on a laptop CPU in minutes. Every image is one of two kinds of scene on a plain dark
background:

* an **object scene**: 1-3 large flat shapes (about a third of the image each), one per slot among
  ``left / right / top / bottom`` (a diamond around the centre), with distinct (colour, shape) pairs;
* a **sign scene** (``ocr_fraction`` of images): one short word in capitals, in one of the colours.

Question kinds (all answers are one lower-case word; counts are digits):

========  ==============================================  ==============================
kind      example                                         answers
========  ==============================================  ==============================
colour    What colour is the shape on the left?           the colours
shape     What shape is at the top?                       the shapes
position  Where is the red circle?                        left / right / top / bottom
count     How many shapes are there?                      0 (sign scenes) .. max_objects
exists    Is there a blue square?                         yes / no (the caller picks)
ocr       What word is written in the image?              the words
========  ==============================================  ==============================

Every kind also has a yes/no *verification* form (``ask(..., polarity=True/False)``: "Is the shape on
the left red?"), which is what MME/POPE-style benchmarks ask. Answers are balanced by construction:
objects are sampled uniformly, so colour/shape/position answers are uniform, object counts are uniform
over ``min_objects..max_objects`` and yes/no is the caller's coin. None is guessable from the question.

Everything is deterministic: the same :class:`WorldConfig` (``seed`` included) gives byte-identical
files. :func:`generate_dataset` writes the training/eval files; benchmark generators reuse
:func:`sample_scene`, :class:`Renderer` and :func:`ask` to write other formats from the same world.

The modules, one job each: :mod:`~impvlm.data.synthetic.world` (vocabulary, :class:`WorldConfig`,
scenes, captions), :mod:`~impvlm.data.synthetic.render` (drawing), :mod:`~impvlm.data.synthetic.questions`
(asking) and :mod:`~impvlm.data.synthetic.dataset` (records and files); this package is their API.
"""

from __future__ import annotations

from impvlm.data.synthetic.dataset import (
    DatasetPaths,
    answer_distribution,
    eval_records,
    generate_dataset,
    instruct_record,
    instruct_turns,
    pretrain_record,
    read_world,
    text_only_qa,
    text_only_record,
    with_suffix,
)
from impvlm.data.synthetic.questions import (
    applicable_kinds,
    ask,
)
from impvlm.data.synthetic.render import (
    Renderer,
    fit_font,
    render,
)
from impvlm.data.synthetic.world import (
    CAPTION_INSTRUCTIONS,
    KINDS,
    OBJECT_KINDS,
    PALETTE,
    POSITION_PHRASES,
    QA,
    REFERRING_KINDS,
    SIGN_KINDS,
    SLOTS,
    SUPPORTED_SHAPES,
    Obj,
    Scene,
    WorldConfig,
    article,
    caption,
    pick,
    sample_scene,
)

__all__ = [
    "CAPTION_INSTRUCTIONS",
    "KINDS",
    "OBJECT_KINDS",
    "PALETTE",
    "POSITION_PHRASES",
    "QA",
    "REFERRING_KINDS",
    "SIGN_KINDS",
    "SLOTS",
    "SUPPORTED_SHAPES",
    "DatasetPaths",
    "Obj",
    "Renderer",
    "Scene",
    "WorldConfig",
    "answer_distribution",
    "applicable_kinds",
    "article",
    "ask",
    "caption",
    "eval_records",
    "fit_font",
    "generate_dataset",
    "instruct_record",
    "instruct_turns",
    "pick",
    "pretrain_record",
    "read_world",
    "render",
    "sample_scene",
    "text_only_qa",
    "text_only_record",
    "with_suffix",
]
