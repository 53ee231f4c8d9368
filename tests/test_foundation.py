"""Templates, image processing, presets, import hygiene and the CLI."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from impvlm import ImpForCausalLM, build_config
from impvlm.errors import ImageError, ImageTooLargeError
from impvlm.image_processing import ImageProcessor, load_image
from impvlm.presets import PRESETS
from impvlm.templates import (
    IGNORE_INDEX,
    PHI2_SYSTEM,
    Turn,
    encode_conversation,
    get_template,
    move_image_to_front,
    turns_from_llava,
)
from impvlm.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [
        PHI2_SYSTEM,
        "USER: what colour is the circle? ASSISTANT: red",
        "a blue square on the left.",
    ] * 20
    return train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok"))


def test_phi2_prompt_strings_are_exact():
    t = get_template("phi2")
    assert t.question_prompt("Q?") == f"{PHI2_SYSTEM} USER: <image>\nQ? ASSISTANT:"
    turns = [
        Turn("user", "<image>\nQ1"),
        Turn("assistant", "A1"),
        Turn("user", "Q2"),
        Turn("assistant", "A2"),
    ]
    assert (
        t.prompt(turns, add_generation_prompt=False)
        == f"{PHI2_SYSTEM} USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"
    )
    v0 = get_template("phi-2_v0")
    assert v0.prompt(turns[:2], add_generation_prompt=False).endswith("ASSISTANT: A1<|endoftext|>")
    plain = get_template("plain")
    assert (
        plain.prompt([Turn("user", "<image>\ndescribe"), Turn("assistant", "a cat")], False)
        == "<image>a cat\n"
    )


def test_image_tag_moves_to_front():
    turns = move_image_to_front(turns_from_llava([{"from": "human", "value": "What is it?\n<image>"}]))
    assert turns[0].content == "<image>\nWhat is it?"


def test_labels_mask_everything_but_answers(tokenizer):
    t = get_template("phi2")
    turns = [
        Turn("user", "<image>\nwhat colour?"),
        Turn("assistant", "red"),
        Turn("user", "and?"),
        Turn("assistant", "blue"),
    ]
    enc = encode_conversation(tokenizer, t, turns)
    assert not enc.mismatch
    kept = [i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert tokenizer.decode(kept) == " red</s> blue</s>"
    assert enc.input_ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1
    # the inference prompt is a prefix of the training text: one code path
    prompt_ids = tokenizer(t.prompt(turns[:1]), add_special_tokens=False).input_ids
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids
    short = encode_conversation(tokenizer, t, turns, max_length=10)
    assert short.truncated and len(short.input_ids) == 10


def test_plain_labels(tokenizer):
    enc = encode_conversation(
        tokenizer, get_template("plain"), [Turn("user", "<image>\nx"), Turn("assistant", "a red circle")]
    )
    assert (
        enc.labels[0] == IGNORE_INDEX
        and tokenizer.decode([i for i in enc.labels if i != IGNORE_INDEX]) == "a red circle\n"
    )


def _png(mode="RGB", size=(40, 20), colour=(255, 0, 0)):
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def test_image_processing_modes(tmp_path):
    squash = ImageProcessor(8, aspect_ratio="squash")
    pad = ImageProcessor(8, aspect_ratio="pad")
    data = _png()
    a = squash(data)
    assert a.shape == (3, 8, 8) and a.dtype == np.float32
    np.testing.assert_allclose(a[0], 1.0, atol=1e-6)  # red everywhere, normalised to +1
    b = pad(data)  # 40x20 padded with the mean colour -> top and bottom rows grey (~0)
    assert abs(b[0, 0, 4]) < 0.02 and b[0, 4, 4] > 0.99
    path = tmp_path / "x.png"
    path.write_bytes(_png(mode="L"))
    assert squash(path).shape == (3, 8, 8)  # non-RGB converted
    assert squash(Image.open(path)).shape == (3, 8, 8)


def test_pad_colour_is_the_mean_truncated_as_upstream_does_it():
    """LLaVA / Imp / LLaVA-Phi pad with ``tuple(int(x * 255) for x in image_mean)``: 127 for SigLIP's
    0.5 (not 128), (122, 116, 104) for CLIP's mean (llama.cpp's letterbox colour too)."""
    clip_mean = (0.48145466, 0.4578275, 0.40821073)
    for mean, colour in (((0.5, 0.5, 0.5), (127, 127, 127)), (clip_mean, (122, 116, 104))):
        pad = ImageProcessor(20, mean=mean, aspect_ratio="pad")
        assert pad.pad_colour == colour
        wide = np.asarray(pad.resize(_png(size=(20, 10))))  # 5 padded rows above and below, no resampling
        assert (wide[0] == colour).all() and (wide[-1] == colour).all() and (wide[10] == (255, 0, 0)).all()


def test_images_above_the_pixel_limit_are_refused_before_decoding(bomb_png, one_colour_png, tmp_path):
    with pytest.raises(
        ImageTooLargeError, match=r"bomb.png is too large to decode \(Image size \(400000000 pixels\)"
    ):
        load_image(bomb_png)  # beyond Pillow's own bomb limit: its error was a traceback
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        load_image(bomb_png.read_bytes(), max_pixels=10**9, name="bomb.png")  # Pillow's limit still holds
    big = one_colour_png(tmp_path / "121mp.png", 11_000, 11_000)  # decoded with a warning before
    with pytest.raises(ImageTooLargeError, match="121,000,000 pixels, more than the limit of 64,000,000"):
        load_image(big)
    small = one_colour_png(tmp_path / "small.png", 100, 50)
    assert load_image(small, max_pixels=5000).size == (100, 50)
    with pytest.raises(ImageTooLargeError, match="5,000 pixels, more than the limit of 4,999"):
        load_image(small, max_pixels=4999)
    with pytest.raises(ImageTooLargeError, match="small.png"):
        ImageProcessor(8, max_pixels=4999)(small)
    assert ImageProcessor(8, max_pixels=4999) == ImageProcessor(8)  # a limit, not preprocessing
    assert "max_pixels" not in ImageProcessor(8).to_dict()


def test_bad_images_are_named(tmp_path):
    with pytest.raises(ImageError, match="not found: .*missing.png"):
        load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png()[:30])
    with pytest.raises(ImageError, match="broken.png"):
        load_image(broken)
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(b"not an image")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    config = build_config(name)
    with torch.device("meta"):
        model = ImpForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    if name == "imp-v1-3b":
        assert config.num_image_tokens == 729 and 3.1e9 < n_params < 3.3e9
        assert len(model.vision_tower.model.vision_model.encoder.layers) == 26
    if name == "imp-v1.5-3b-196":
        assert config.num_image_tokens == 196
    if name == "llava-phi-3b":
        assert config.num_image_tokens == 576 and config.template == "phi-2_v0"
    if name.endswith("tiny"):
        assert config.hidden_size % 256 == 0


def test_import_impvlm_stays_light():
    code = (
        "import sys, impvlm\n"
        "heavy = [m for m in ('peft', 'deepspeed', 'onnx', 'onnxruntime', 'llama_cpp') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "impvlm.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "presets" in out.stdout and "synth" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "impvlm.cli", "presets", "--build", "imp-v9"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown preset 'imp-v9'" in bad.stderr and "Traceback" not in bad.stderr
