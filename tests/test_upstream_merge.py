"""`imp merge` of the MILVLG/imp training outputs (tests/upstream_layouts.py: stage-1 mm_projector.bin,
a LoRA folder, a full fine-tune whose tower is only named) with the real Phi-2 tokenizer files: the
merged checkpoint holds what impvlm reads from the stage folders directly, its tokenizer is the one the
training code ran with (``</s>`` added at 50295, no ``<image>``: the image is spliced where the text
says ``<image>``), and it chats the same answer."""

from __future__ import annotations

import json

import pytest
import torch
from cli_run import imp
from upstream_configs import ENDOFTEXT, EOS, VOCAB_SIZE
from upstream_layouts import write_images

from impvlm.checkpoint import load_model, read_checkpoint
from impvlm.errors import ConfigError
from impvlm.templates import IMAGE_SENTINEL
from impvlm.tokenizer import image_token_id, load_tokenizer, single_token_id
from impvlm.train.tokens import load_training_tokenizer
from impvlm.upstream import Parts

QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("pictures"))[0]


def chat(model: object, image: object, *options: object) -> str:
    status, out, err = imp("chat", model, "--image", image, QUESTION, "--max-new-tokens", 8, "--threads", 1,
                           *options)  # fmt: skip
    assert status == 0, err
    return out.strip()


def assert_same_weights(merged: torch.nn.Module, direct: torch.nn.Module) -> None:
    want = direct.state_dict()
    got = merged.state_dict()
    assert set(got) == set(want)
    for key, tensor in want.items():
        torch.testing.assert_close(got[key].float(), tensor.float(), msg=key)


def test_stage_chain_merges_with_the_phi2_tokenizer(layouts, image, tmp_path):
    lora = layouts["imp-lora"]
    out = tmp_path / "merged"
    status, _, err = imp("merge", layouts["imp-stage1"].path, lora.path, *lora.options, "--out", out)
    assert status == 0, err
    merged = read_checkpoint(out)
    assert (merged.config.template, merged.config.image_token_index) == ("phi2", IMAGE_SENTINEL)
    assert (merged.config.eos_token_id, merged.config.pad_token_id) == (EOS, ENDOFTEXT)
    tok = merged.tokenizer()
    assert single_token_id(tok, "</s>") == EOS == tok.eos_token_id and image_token_id(tok) == IMAGE_SENTINEL
    assert len(tok) == EOS + 1 <= VOCAB_SIZE
    parts = Parts.of(*lora.options[1::2])
    assert_same_weights(merged.model(), read_checkpoint(lora.path, parts).model())
    assert chat(out, image) == chat(lora.path, image, *lora.options)
    assert json.loads((out / "merge.json").read_text())["tokenizer"] == str(parts.language_model.resolve())


def test_stage1_alone_keeps_the_plain_tokenizer(layouts, tmp_path):
    stage1 = layouts["imp-stage1"]
    out = tmp_path / "merged"
    status, _, err = imp("merge", stage1.path, *stage1.options, "--out", out)
    assert status == 0, err
    merged = read_checkpoint(out)
    assert (merged.config.template, merged.config.image_token_index) == ("plain", IMAGE_SENTINEL)
    assert len(merged.tokenizer()) == EOS  # --version plain adds nothing: "\n" is the stop word


def test_full_fine_tune_merges_with_its_named_tower(layouts, image, tmp_path):
    fft = layouts["imp-fft"]
    out = tmp_path / "merged"
    status, _, err = imp("merge", fft.path, *fft.options, "--out", out)
    assert status == 0, err
    direct = load_model(fft.path, parts=Parts.of(vision_tower=fft.options[1]))
    assert_same_weights(load_model(out), direct)
    assert chat(out, image) == chat(fft.path, image, *fft.options)


def test_a_tokenizer_that_cannot_hold_the_model_ids_is_refused(layouts, tmp_path):
    """</s> is added only at the model's eos id, <image> only at its image_token_index."""
    lora = layouts["imp-lora"]
    config = read_checkpoint(lora.path, Parts.of(*lora.options[1::2])).config
    phi2 = lora.options[1]
    assert len(load_tokenizer(phi2)) == EOS
    config.eos_token_id = EOS + 1
    with pytest.raises(ConfigError, match=r"splits the stop string '</s>' into"):
        load_training_tokenizer(phi2, config)
    config.eos_token_id, config.image_token_index = EOS, EOS + 2
    with pytest.raises(ConfigError, match=r"has no <image> token and its next id 50296 is not the model's"):
        load_training_tokenizer(phi2, config)
    config.image_token_index = EOS + 1
    tok = load_training_tokenizer(phi2, config)
    assert (single_token_id(tok, "</s>"), image_token_id(tok)) == (EOS, EOS + 1)


@pytest.mark.slow
def test_merged_stage_chain_exports_and_chats_natively(layouts, image, tmp_path):
    """The merged checkpoint (no <image> token) goes through `imp export` to llama.cpp's multimodal
    library and answers as PyTorch does."""
    lora = layouts["imp-lora"]
    merged, bundle = tmp_path / "merged", tmp_path / "bundle"
    assert imp("merge", layouts["imp-stage1"].path, lora.path, *lora.options, "--out", merged)[0] == 0
    status, _, err = imp("export", merged, "--out", bundle, "--gguf", "f16", "--onnx", "none", "--mmproj", "f16",
                         "--threads", 1, "--no-progress")  # fmt: skip
    assert status == 0, err
    assert json.loads((bundle / "manifest.json").read_text())["tokens"]["image"] is None
    assert chat(f"native:{bundle}?mmproj=f16", image, "--lm", "f16") == chat(merged, image)
