"""The tower-family registry, and the one definition of the image token, answer suffix and errors."""

from __future__ import annotations

import pytest
from transformers import CLIPVisionModel, SiglipVisionModel

from benchmarks.base import BenchmarkDataError, BenchmarkError, BenchmarkOptionError, UnknownBenchmarkError
from export.errors import ExportError
from impvlm.errors import ConfigError, ImpError
from impvlm.presets import get_preset
from impvlm.towers import CLIP, SIGLIP, TOWER_FAMILIES, find_tower, tower_family
from impvlm.vision import VisionTower


def test_registry_resolves_transformers_and_upstream_names() -> None:
    assert tower_family("siglip_vision_model") is tower_family("siglip") is SIGLIP
    assert tower_family("clip_vision_model") is tower_family("clip") is CLIP
    assert find_tower("siglip", upstream_names=False) is None
    assert SIGLIP.model_class() is SiglipVisionModel and CLIP.model_class() is CLIPVisionModel
    for family in TOWER_FAMILIES.values():
        assert family.config_class().model_type == family.model_type
    with pytest.raises(ConfigError, match=r"unknown vision tower type 'vit'; supported: siglip_vision_model"):
        tower_family("vit")


@pytest.mark.parametrize("preset, family", [("imp-tiny", SIGLIP), ("llava-phi-tiny", CLIP)])
def test_config_and_tower_follow_the_family(preset: str, family) -> None:
    config = get_preset(preset).config()
    assert config.tower is family and config.has_cls_token is family.has_cls
    assert (tuple(config.image_mean), tuple(config.image_std)) == family.mean_std
    tower = VisionTower(config)
    assert isinstance(tower.model, family.model_class())
    held = {n for n, _ in tower.named_parameters()}
    assert any("post_layernorm" in n for n in held) is (not family.truncated)


def test_one_image_token_and_short_answer_instruction() -> None:
    import benchmarks.base
    import impdefs
    import impvlm.templates
    import impvlm.tokenizer

    assert impvlm.tokenizer.IMAGE_TOKEN is impvlm.templates.IMAGE_TOKEN == "<image>"
    instruction = impvlm.templates.SHORT_ANSWER_SUFFIX
    assert instruction == benchmarks.base.SHORT_ANSWER_SUFFIX  # re-exported from impdefs for the scorers
    assert "\n" + instruction == impdefs.SHORT_ANSWER_TAIL


@pytest.mark.parametrize(
    "error", [BenchmarkError, UnknownBenchmarkError, BenchmarkDataError, BenchmarkOptionError, ExportError]
)
def test_the_cli_treats_every_user_error_alike(error: type[Exception]) -> None:
    from impvlm.cli import user_errors

    assert issubclass(error, user_errors())
    assert issubclass(ExportError, ImpError)


def test_shared_definitions_import_nothing_and_root_every_user_error() -> None:
    import subprocess
    import sys
    from pathlib import Path

    import impdefs
    from benchmarks.mmvet_judge import JudgeError

    code = "import sys; before = set(sys.modules); import impdefs; print(sorted(set(sys.modules) - before))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert out.stdout.strip() == "['impdefs']"
    assert ImpError is impdefs.ImpError
    for error in (BenchmarkError, BenchmarkDataError, JudgeError, ExportError, ConfigError):
        assert issubclass(error, impdefs.ImpError), error


def test_a_closed_output_pipe_ends_the_command_quietly(tiny_checkpoint) -> None:
    """``imp info CHECKPOINT | head``: the reader stops early; no traceback, no error line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "impvlm.cli", "info", str(tiny_checkpoint)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[1],
        )
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""
