"""What the export checks ask the model: the calibration prompts, their images and the greedy length.

The GGUF LM check (:mod:`export.gguf_validate`), the importance matrix (:mod:`export.quantize`)
and the mmproj check (:mod:`export.mmproj_validate`) all run the model's own template on the same
questions about synthetic scenes, so the numbers of one bundle are measured on one prompt set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from impvlm.templates import IMAGE_TOKEN

#: Greedy tokens compared per calibration prompt.
N_GREEDY = 16
#: Questions asked about a synthetic scene (``<image>`` prompts).
IMAGE_QUESTIONS = (
    "What colour is the shape on the left?",
    "How many shapes are there?",
    "Describe the image concisely.",
)
#: Questions asked without an image.
TEXT_QUESTIONS = ("Write one sentence about the sea.", "What is two plus three?")
#: How :func:`calibration_images` makes its images, for the bundle manifest.
IMAGES_DESCRIPTION = "one synthetic scene per <image> (impvlm.data.synthetic, seed 1)"


def default_calibration(config: Any) -> list[str]:
    """A few single-turn prompts of the model's template, with and without ``<image>`` (distinct and
    non-empty: the ``plain`` template of a stage-1 model drops the question, leaving ``<image>``)."""
    from impvlm.templates import get_template

    template = get_template(config.template)
    prompts = [template.question_prompt(q) for q in IMAGE_QUESTIONS] + [
        template.question_prompt(q, with_image=False) for q in TEXT_QUESTIONS
    ]
    return [p for p in dict.fromkeys(prompts) if p]


def image_prompts(config: Any, prompts: Sequence[str] | None = None) -> list[str]:
    """The prompts with an ``<image>`` among ``prompts`` (default :func:`default_calibration`); the
    default's when none has one."""
    found = [p for p in (prompts or ()) if IMAGE_TOKEN in p]
    return found or [p for p in default_calibration(config) if IMAGE_TOKEN in p]


def calibration_images(config: Any, prompts: Sequence[str]) -> Any:
    """One synthetic scene per ``<image>`` tag across ``prompts`` (in order), or None without tags."""
    from export.onnx_vision import parity_images

    n = sum(p.count(IMAGE_TOKEN) for p in prompts)
    return parity_images(config, n_synthetic=n, n_random=0, seed=1) if n else None
