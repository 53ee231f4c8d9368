"""The tiny Imp the package ships: stored in fp16 at a size git holds, loaded by the real loader on CPU,
and its recorded held-out accuracy reproduced on the held-out world regenerated from its card."""

import json

import pytest
import torch
from safetensors import safe_open

from impvlm.checkpoint import load_model, read_checkpoint
from impvlm.errors import CheckpointError
from impvlm.pretrained import CARD_FILE, TINY_SYNTHETIC, read_card, shipped_checkpoint, shipped_names

CHANCE = 0.27  # held-out exact answers of a guesser that knows each question kind's answer set


@pytest.fixture(scope="module")
def card():
    return read_card(TINY_SYNTHETIC)


def test_shipped_in_fp16_small_enough_for_git(card):
    folder = shipped_checkpoint()
    assert TINY_SYNTHETIC in shipped_names()
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 12 * 2**20, size  # a few MB
    (weights,) = folder.glob("*.safetensors")
    with safe_open(str(weights), "pt") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}
    assert json.loads((folder / "config.json").read_text())["model_type"] == "impvlm"
    assert card["name"] == TINY_SYNTHETIC and card["preset"] == "imp-tiny"
    assert set(card["recipes"]) == {"tiny-warmup", "tiny-pretrain", "tiny-lora"}


def test_loads_on_cpu_in_fp32_with_its_tokenizer():
    reading = read_checkpoint(shipped_checkpoint())
    assert reading.layout.name == "impvlm" and reading.tokens.tokenizer_dir is not None
    model = load_model(shipped_checkpoint())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert next(model.parameters()).device.type == "cpu"


def test_unknown_name_is_one_line_error():
    with pytest.raises(CheckpointError, match=f"shipped: {TINY_SYNTHETIC}"):
        shipped_checkpoint("no-such-model")


def test_recorded_held_out_accuracy_is_reproduced(card, tmp_path):
    """Regenerates the held-out world of the card's seed (eval images do not depend on the training
    count) and scores the shipped folder as the card did: same questions, same greedy answers."""
    from impvlm.data.synthetic import WorldConfig, generate_dataset
    from impvlm.train.evaluate import exact_accuracy

    made = card["pipeline"]
    generate_dataset(tmp_path, 1, made["eval_images"], WorldConfig(seed=made["seed"]), progress=False)
    result = exact_accuracy(shipped_checkpoint(), tmp_path / "eval.json", limit=made["eval_limit"])
    recorded = card["held_out"]
    assert result["n"] == recorded["n"]
    # greedy answers of a float32 model: the same machine gives the same answers; another CPU's float
    # rounding may flip a near-tie, so a few answers of slack
    assert abs(result["overall"] - recorded["overall"]) <= 3 / recorded["n"], (result, recorded)
    assert result["overall"] > CHANCE + 0.2
    assert (shipped_checkpoint() / CARD_FILE).is_file()
