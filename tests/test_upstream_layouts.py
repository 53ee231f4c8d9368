"""Every published layout (tests/upstream_layouts.py: written as upstream's code writes them, with the
real Phi-2 ids) loads, exports and chats without running code shipped in the folder, with the same
greedy answer on PyTorch, the exported bundle and llama.cpp's multimodal library; what is truly
unsupported fails in one line naming the file and the field.

One layout runs end to end by default; the others are marked slow (about a minute each on 2 cores).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_run import imp
from logit_gaps import GapTorch, divergence
from upstream_configs import ENDOFTEXT, EOS, IMAGE, LM, SIGLIP
from upstream_layouts import (
    TrainingArguments,
    _Init,
    phi_tensors,
    write_fft,
    write_images,
)

from impvlm.checkpoint import load_model, read_checkpoint
from impvlm.errors import CheckpointError
from impvlm.templates import IMAGE_SENTINEL
from impvlm.upstream import Parts
from runtimes.loader import load_runtime

QUESTION = "What colour is the shape?"
#: llama.cpp builds whose llava graph appends CLIP's class token last cannot run a CLIP mmproj.
CLS_ORDER_BUG = "libmtmd computes the class token last"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("pictures"))


def parts(fixture) -> Parts:
    opts = dict(zip(fixture.options[::2], fixture.options[1::2]))
    return Parts.of(opts.get("--language-model"), opts.get("--vision-tower"))


# ------------------------------------------------------------------------------------ end to end
END_TO_END = [
    "imp-lora",  # default run: no <image> token (sentinel), </s> added as upstream does, base folders
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in ("imp-v1-3b", "Imp-v1.5-3B-Phi2", "Imp-v1.5-3B-196", "llava-phi", "imp-stage1", "imp-fft")
    ),
]
#: PyTorch's top-2 logit gap under which an f16 LM / an f16 mmproj may pick the other token: a random
#: tiny model has such near-ties; an answer may part from PyTorch's only at one of them.
TIE = 0.25


def torch_answers(fixture, images) -> tuple[list[list[int]], list[list[float]], list[str]]:
    """PyTorch's greedy answers (ids and text) to :data:`QUESTION` and the top-2 gap at each step."""
    rt = GapTorch(fixture.path, threads=1, **vars(parts(fixture)))
    ids, gaps, texts = [], [], []
    for image in images:
        out = rt.generate([image], QUESTION, max_new_tokens=8)
        ids.append(out.token_ids), gaps.append(rt.gaps), texts.append(out.text)
    return ids, gaps, texts


@pytest.mark.parametrize("name", END_TO_END)
def test_layout_exports_and_chats_the_same_everywhere(layouts, images, tmp_path, name):
    fixture = layouts[name]
    status, out, err = imp("info", fixture.path, *fixture.options)
    assert status == 0, err
    assert f"layout     {fixture.layout}:" in out and f"template   {fixture.template}:" in out
    bundle = tmp_path / "bundle"
    export = ["export", fixture.path, "--out", bundle, "--gguf", "f16,q8_0", "--onnx", "fp32,int8"]
    export += ["--threads", "1", "--no-progress", *fixture.options]
    status, out, err = imp(*export, "--mmproj", "f16")
    runtimes = {  # runtime: (load_runtime options, `imp chat` model and options)
        "exported": (
            {"lm": "f16", "vision": "fp32"},
            (f"exported:{bundle}", "--lm", "f16", "--vision", "fp32"),
        ),
        "native": ({"lm": "f16", "mmproj": "f16"}, (f"native:{bundle}?mmproj=f16", "--lm", "f16")),
    }
    if status != 0:  # a CLIP tower on a llama.cpp without the class-token fix: refused in one line
        assert fixture.layout == "llava-phi" and CLS_ORDER_BUG in err, err
        assert err.strip().count("\n") == 0 and not bundle.exists()
        status, out, err = imp(*export)
        del runtimes["native"]
    assert status == 0, err
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["template"]["name"] == fixture.template
    assert manifest["tokens"]["image"] == (
        None if fixture.image_token == IMAGE_SENTINEL else fixture.image_token
    )
    assert manifest["source"]["layout"] == "upstream"

    want, gaps, texts = torch_answers(fixture, images)
    assert all(texts) and want[0] != want[1], texts  # real answers, and the picture matters
    status, out, err = imp("chat", fixture.path, "--image", images[0], QUESTION, "--max-new-tokens", 8,
                           "--threads", 1, *fixture.options)  # fmt: skip
    assert status == 0 and out.strip() == texts[0], err
    for runtime, (options, (model, *flags)) in runtimes.items():
        with load_runtime(f"{runtime}:{bundle}", threads=1, **options) as rt:
            answers = [rt.generate([image], QUESTION, max_new_tokens=8) for image in images]
        for image_gaps, ref, got in zip(gaps, want, answers):
            k = divergence(ref, got.token_ids)
            assert k is None or image_gaps[k] < TIE, f"{runtime} parts from PyTorch at step {k}: {texts}"
        status, out, err = imp("chat", model, "--image", images[0], QUESTION, "--max-new-tokens", 8,
                               "--threads", 1, *flags)  # fmt: skip
        assert status == 0 and out.strip() == answers[0].text, f"imp chat on {runtime}: {err}"


# ------------------------------------------------------------------------------------ reading
EXPECTED = {  # layout, template, image id, eos (= the template's stop token), held tower layers
    "imp-v1-3b": ("imp", "phi2", IMAGE, EOS, 2),
    "imp-v1-3b-bin": ("imp", "phi2", IMAGE, EOS, 2),
    "Imp-v1.5-3B-Phi2": ("imp", "phi2", IMAGE, EOS, 2),
    "Imp-v1.5-3B-196": ("imp", "phi2", IMAGE, EOS, 2),
    "llava-phi": ("llava-phi", "phi-2_v0", IMAGE_SENTINEL, ENDOFTEXT, 3),
    "imp-stage1": ("imp-stage1", "plain", IMAGE_SENTINEL, ENDOFTEXT, 2),  # and "\n" (198) is a stop word
    "imp-lora": ("imp-lora", "phi2", IMAGE_SENTINEL, EOS, 2),
    "imp-fft": ("imp-train", "phi2", IMAGE_SENTINEL, EOS, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_layout_reads_as_upstream_code_reads_it(layouts, name):
    fixture = layouts[name]
    reading = read_checkpoint(fixture.path, parts(fixture))
    c = reading.config
    layout, template, image, eos, tower_layers = EXPECTED[name]
    assert (reading.layout.name, c.template, c.image_token_index, c.eos_token_id) == (
        layout,
        template,
        image,
        eos,
    )
    assert c.vision_config.num_hidden_layers == tower_layers and c.bos_token_id is None
    # defaults read as upstream reads them: n_inner null -> 4 x hidden, n_head_kv null -> n_head,
    # rotary_dim -> the rotated share of a head, eps and vocab as written
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) == (
        64,
        256,
        4,
        4,
    )
    assert c.partial_rotary_factor * (c.hidden_size // c.num_attention_heads) == LM["rotary_dim"]
    assert (c.layer_norm_eps, c.rope_theta, c.vocab_size, c.hidden_act) == (1e-5, 10000.0, 51200, "gelu_new")
    assert c.mm_projector_type == "mlp2x_gelu" and c.pad_token_id == ENDOFTEXT


def test_template_comes_from_what_the_checkpoint_is_not_from_its_eos(layouts, tmp_path):
    v15 = read_checkpoint(layouts["Imp-v1.5-3B-Phi2"].path)
    assert json.loads((v15.folder / "config.json").read_text())["eos_token_id"] == ENDOFTEXT
    assert v15.config.template == "phi2" and "model_type 'imp'" in v15.tokens.template_reason
    assert any("eos_token_id 50256" in note and "50295" in note for note in v15.notes)
    llava = read_checkpoint(layouts["llava-phi"].path)
    assert "model_type 'llava_phi'" in llava.tokens.template_reason
    assert llava.config.image_mean[0] == pytest.approx(0.48145466)  # the CLIP preprocessor_config.json
    # a template recorded in config.json wins, and says so
    folder = Path(shutil.copytree(layouts["imp-v1-3b"].path, tmp_path / "recorded"))
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "conversation": "phi-2_v0"}))
    recorded = read_checkpoint(folder)
    assert recorded.config.template == "phi-2_v0" and recorded.config.eos_token_id == ENDOFTEXT
    assert recorded.tokens.template_reason == "config.json records conversation 'phi-2_v0'"


def test_phi_msft_names_and_bin_load_the_same_model(layouts):
    """imp-v1-3b's fused Wqkv and lm_head.{ln,linear}, as sharded safetensors or one .bin, compute
    what transformers' PhiForCausalLM computes with the same weights under its own names."""
    from transformers import PhiConfig, PhiForCausalLM

    shards = load_model(layouts["imp-v1-3b"].path)
    pickle = load_model(layouts["imp-v1-3b-bin"].path)
    for (k1, v1), (k2, v2) in zip(shards.state_dict().items(), pickle.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    phi = PhiForCausalLM(PhiConfig(**{k: getattr(shards.config, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "partial_rotary_factor", "layer_norm_eps", "hidden_act")})).eval()  # fmt: skip
    phi.load_state_dict({k: v.half().float() for k, v in phi_tensors(_Init(1)).items()})
    ids = torch.tensor([[300, 12, 250, 7, 99]])
    with torch.no_grad():
        torch.testing.assert_close(shards(input_ids=ids).logits, phi(input_ids=ids).logits)


def test_towers_compute_what_upstream_towers_compute(layouts):
    """Imp: the SigLIP layers up to the selected one, no post-layernorm; LLaVA-Phi: CLIP's
    hidden_states[-2] without the class token. Rebuilt here from the raw upstream tensors."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    def raw(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
        state = {}
        for file in folder.glob("*.safetensors"):
            state |= {k[len(prefix) :]: v.float() for k, v in load_file(file).items() if k.startswith(prefix)}
        return state

    pixels = torch.randn(2, 3, 56, 56)
    imp = load_model(layouts["Imp-v1.5-3B-Phi2"].path)
    siglip = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=SIGLIP["hidden"], intermediate_size=SIGLIP["intermediate"], num_hidden_layers=2,
        num_attention_heads=SIGLIP["heads"], image_size=56, patch_size=SIGLIP["patch"])).eval()  # fmt: skip
    siglip.load_state_dict(
        raw(layouts["Imp-v1.5-3B-Phi2"].path, "model.vision_tower.vision_tower."), strict=False
    )
    llava = load_model(layouts["llava-phi"].path)
    clip = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=56,
        patch_size=14, projection_dim=32)).eval()  # fmt: skip
    clip.load_state_dict(raw(layouts["llava-phi"].path, "model.vision_tower."))
    with torch.no_grad():
        ref = siglip(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(imp.vision_tower(pixels), ref)
        ref = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(llava.vision_tower(pixels), ref)


def test_phi2_v0_bundle_tokens_with_the_real_phi2_tokenizer(layouts):
    """LLaVA-Phi's stop token is Phi-2's unk token (<|endoftext|> is bos, eos, unk and pad): legal."""
    from export.bundle import _token_ids

    reading = read_checkpoint(layouts["llava-phi"].path)
    tokenizer = reading.tokenizer()
    assert tokenizer.unk_token_id == ENDOFTEXT and "<image>" not in tokenizer.get_vocab()
    tokens = _token_ids(reading.config, tokenizer)
    assert (tokens.stop, tokens.eos, tokens.image) == (ENDOFTEXT, ENDOFTEXT, None)


def test_fine_tune_without_tower_weights_takes_them_from_the_tower_folder(layouts, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "imp-fft-no-tower"
    write_fft(folder, with_tower=False)
    tower = Path(parts(layouts["imp-fft"]).vision_tower)
    model = load_model(folder, parts=Parts.of(vision_tower=tower))
    want = load_file(tower / "model.safetensors")["vision_model.encoder.layers.1.mlp.fc1.weight"]
    assert torch.equal(model.vision_tower.model.vision_model.encoder.layers[1].mlp.fc1.weight, want)


def test_info_describes_a_checkpoint(layouts):
    status, out, err = imp("info", layouts["imp-v1-3b"].path)
    assert status == 0, err
    for expected in (
        "layout     imp: Imp as released", "(config in phi-msft names)", "template   phi2: Imp with a Phi-2 LM",
        "<image> is token 50296; stop '</s>' = 50295, eos 50295", "siglip_vision_model: 2 layers held", "16 image tokens",
        "weights    float16, 2 files", "onnx/vision_encoder.onnx", "gguf/model-f16.gguf", "--mmproj f16",
    ):  # fmt: skip
        assert expected in out, out
    status, out, err = imp("info", layouts["llava-phi"].path)
    assert status == 0 and "no <image> token: the image goes where the prompt says <image>" in out
    assert "bfloat16" in out and "features of hidden_states[-2], CLS dropped" in out


# ------------------------------------------------------------------------------------ refusals
def one_line_error(*argv: object) -> str:
    status, _, err = imp(*argv)
    assert status == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_named_only_parts_are_asked_for_in_one_line(layouts, tmp_path):
    fft = one_line_error(
        "export",
        layouts["imp-fft"].path,
        "--out",
        tmp_path / "b",
        "--onnx",
        "fp32",
        "--gguf",
        "none",
        "--no-progress",
    )
    assert "imp-fft/config.json" in fft and "pass --vision-tower PATH" in fft
    assert "checkpoints/base/siglip-so400m-patch14-384" in fft and not (tmp_path / "b").exists()
    stage1 = one_line_error("chat", layouts["imp-stage1"].path, "hello")
    assert "stage-1 output" in stage1 and "--language-model PATH and --vision-tower PATH" in stage1
    lora = one_line_error("info", layouts["imp-lora"].path, "--language-model", tmp_path / "nowhere")
    assert "--language-model folder not found" in lora


def edited(folder: Path, tmp_path: Path, **changes) -> Path:
    copy = Path(shutil.copytree(folder, tmp_path / folder.name))
    raw = json.loads((copy / "config.json").read_text())
    raw.update(changes)
    (copy / "config.json").write_text(json.dumps(raw))
    return copy


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("imp-v1-3b", {"n_embd": None}, "config.json: n_embd is None, expected a positive integer"),
        ("Imp-v1.5-3B-Phi2", {"intermediate_size": None}, "config.json: intermediate_size is null"),
        ("imp-v1-3b", {"image_aspect_ratio": "anyres"}, "config.json: image_aspect_ratio 'anyres' is not supported"),
        ("imp-v1-3b", {"mm_use_im_start_end": True}, "config.json: mm_use_im_start_end true is not supported"),
        ("imp-v1-3b", {"mm_vision_select_layer": None}, "config.json: mm_vision_select_layer is missing"),
        ("llava-phi", {"vision_config": None}, "config.json: vision_config is missing"),
        ("imp-v1-3b", {"model_type": "qwen2_vl"}, "config.json: model_type 'qwen2_vl' is not a layout impvlm reads"),
        ("imp-v1-3b", {"vision_tower_config": {"model_type": "dinov2"}}, "vision_tower_config.model_type: unknown vision tower type 'dinov2'"),
    ],
)  # fmt: skip
def test_unsupported_fields_are_named_in_one_line(layouts, tmp_path, name, changes, message):
    folder = edited(layouts[name].path, tmp_path, **changes)
    assert message in one_line_error("info", folder)


def test_weight_mismatch_names_the_first_tensor_with_both_shapes(layouts, tmp_path):
    folder = edited(layouts["imp-v1-3b"].path, tmp_path, n_inner=128)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert "(transformer.h.0.mlp.fc1.weight)" in message and ".safetensors" in message
    assert "model.layers.0.mlp.fc1.weight has shape (256, 64), config.json implies (128, 64)" in message


def test_impvlm_checkpoint_mismatch_and_pickles_are_named(tmp_path):
    """This project's own format: the first tensor with both shapes (not a cut-off torch message), and a
    .bin pickle that needs more than tensors is refused as such (not blamed on TF 2.0 checkpoints)."""
    from impvlm import ImpForCausalLM, build_config
    from impvlm.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = ImpForCausalLM(build_config("imp-tiny"))
    folder = save_checkpoint(model, None, tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "intermediate_size": 512}))
    with pytest.raises(
        CheckpointError, match=r"fc1.weight has shape \(1024, 256\), config.json implies \(512, 256\)"
    ):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps(raw))
    for file in folder.glob("model*.safetensors"):
        file.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    torch.save({**model.state_dict(), "args": TrainingArguments()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert "pytorch_model.bin is a pickle that holds more than tensors" in message
    assert "TrainingArguments" in message and "TF 2.0" not in message
