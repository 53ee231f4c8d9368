"""Export bundles end to end on tiny models: files, manifest, tamper / wrong-model refusal, atomicity."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from export import onnx_vision
from export.bundle import export_bundle
from export.errors import ExportError
from export.kinds.lm import judge_lm
from export.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    TemplateInfo,
    load_manifest,
    sha256_file,
    verify_bundle_matches,
)
from export.onnx_io import OnnxFormatError, graph_io
from export.onnx_vision import ParityThreshold
from export.quant_types import lm_gate
from export.tokenizer_check import CHECK_CHECKPOINT, CHECK_EMBEDDING, CHECK_SPECIAL_IDS, tokenizer_sha256
from impvlm import ImpForCausalLM, build_config
from impvlm.checkpoint import checkpoint_hash, save_checkpoint
from impvlm.cli import main
from impvlm.errors import BundleError
from impvlm.image_processing import ImageProcessor
from impvlm.templates import get_template
from impvlm.tokenizer import SYSTEM_PROMPT, train_tokenizer

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (GGUF quantization and validation)"
)
TEXTS = [
    SYSTEM_PROMPT,
    "USER: What colour is the shape on the left? ASSISTANT: red</s>",
    "a red circle on the left and a blue square at the top.",
    "How many shapes are there? Describe the image concisely.",
] * 3


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(TEXTS, 400, tmp_path_factory.mktemp("tok"))


def make_checkpoint(tokenizer, folder: Path, preset: str = "imp-tiny", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = ImpForCausalLM(build_config(preset, tokenizer=tokenizer)).eval()
    return save_checkpoint(model, tokenizer, folder)


@pytest.fixture(scope="module")
def checkpoint(tokenizer, tmp_path_factory):
    return make_checkpoint(tokenizer, tmp_path_factory.mktemp("ckpt") / "imp-tiny")


@pytest.fixture(scope="module")
def onnx_bundle(checkpoint, tmp_path_factory):
    """Vision fp32 + int8 and an unvalidated f16 GGUF: needs no llama.cpp."""
    out = tmp_path_factory.mktemp("bundles") / "imp-tiny"
    manifest = export_bundle(checkpoint, out, gguf=["f16"], onnx=["fp32", "int8"], validate=False)
    return out, manifest


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / bundle.name))


# ------------------------------------------------------------------------------------ manifest


def test_manifest_describes_the_model(onnx_bundle, checkpoint):
    out, written = onnx_bundle
    m = load_manifest(out)
    assert m == written.to_dict()  # what export_bundle returned is what is on disk
    cfg = build_config("imp-tiny")
    assert (m["format"], m["format_version"]) == (FORMAT_NAME, FORMAT_VERSION)
    assert m["model"]["id"] == "imp-tiny"
    assert m["model"]["embedding_width"] == cfg.hidden_size == 256
    assert m["model"]["image_tokens"] == cfg.num_image_tokens == 16
    assert m["model"]["vocab_size"] == 1024 and m["model"]["context_length"] == cfg.max_position_embeddings
    assert m["source"] == {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": checkpoint_hash(checkpoint),
        "layout": "impvlm",
    }
    template = get_template("phi2")
    assert m["template"]["system"] == template.system and m["template"]["roles"] == ["USER", "ASSISTANT"]
    assert (m["template"]["sep"], m["template"]["sep2"], m["template"]["stop_str"]) == (" ", "</s>", "</s>")
    assert m["template"]["question_prompt"].format(question="Q?") == template.question_prompt("Q?")
    assert m["template"]["question_prompt_text_only"].format(question="Q?") == template.question_prompt(
        "Q?", with_image=False
    )
    assert m["tokens"] == {"image": 2, "eos": 1, "pad": 0, "bos": None, "stop": 1}
    assert ImageProcessor.from_config(m["image"]) == ImageProcessor.from_config(cfg)
    assert set(m["tools"]) >= {"torch", "transformers", "onnx", "onnxruntime", "gguf", "llama_cpp"}
    assert m["tools"]["torch"] == torch.__version__
    assert m["timings"]["total_seconds"] > 0 and m["timings"]["load_seconds"] > 0


def test_files_sections_and_hashes(onnx_bundle):
    out, _ = onnx_bundle
    m = load_manifest(out)
    assert m["vision"]["fp32"]["file"] == "onnx/vision_encoder.onnx"
    assert m["vision"]["int8"]["file"] == "onnx/vision_encoder_q8.onnx"
    assert m["lm"]["f16"]["file"] == "gguf/model-f16.gguf"
    assert m["vision"]["fp32"]["details"]["input"] == "pixel_values"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(m["files"]) == on_disk  # every file listed, nothing extra (no scratch base left)
    kinds = {rel: rec["kind"] for rel, rec in m["files"].items()}
    assert kinds["onnx/vision_encoder.onnx"] == "vision" and kinds["gguf/model-f16.gguf"] == "lm"
    assert {kinds[f] for f in on_disk if f.startswith("tokenizer/")} == {"tokenizer"}
    assert {"tokenizer/tokenizer.json", "tokenizer/vocab.json", "tokenizer/merges.txt"} <= on_disk
    for rel, rec in m["files"].items():
        assert rec["bytes"] == (out / rel).stat().st_size and len(rec["sha256"]) == 64
    assert m["files"]["onnx/vision_encoder_q8.onnx"]["precision"] == "int8"
    for entry in (*m["vision"].values(), *m["lm"].values()):
        assert entry["export_seconds"] >= 0
    # validate=False: nothing claims to be checked
    assert all(e["validation"] is None for e in (*m["vision"].values(), *m["lm"].values()))
    assert not list(out.parent.glob(".imp-tiny.*"))  # no temp folders left next to it


# ------------------------------------------------------------------------------------ refusals


def test_tampered_file_is_named(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    victim = bundle / "onnx" / "vision_encoder_q8.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"onnx/vision_encoder_q8\.onnx .*sha256 does not match"):
        load_manifest(bundle)
    load_manifest(bundle, verify=False)  # structure is fine; only the contents changed


def test_missing_file_truncated_file_and_missing_manifest(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    (bundle / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(BundleError, match=r"missing tokenizer/merges\.txt"):
        load_manifest(bundle)
    gguf = bundle / "gguf" / "model-f16.gguf"
    gguf.write_bytes(gguf.read_bytes()[:-10])
    shutil.copy(onnx_bundle[0] / "tokenizer" / "merges.txt", bundle / "tokenizer" / "merges.txt")
    with pytest.raises(BundleError, match=r"gguf/model-f16\.gguf .*changed since export"):
        load_manifest(bundle)
    (bundle / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_manifest(bundle)
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_manifest(tmp_path / "nowhere")


def test_unknown_format_version_and_malformed_manifest(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        load_manifest(bundle)
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "tokens"}))
    with pytest.raises(BundleError, match="malformed: missing key 'tokens'"):
        load_manifest(bundle)
    path.write_text(json.dumps({**data, "format": "something-else"}))
    with pytest.raises(BundleError, match="not an impvlm-bundle manifest"):
        load_manifest(bundle)
    escaped = {**data, "files": {"../outside": next(iter(data["files"].values())), **data["files"]}}
    path.write_text(json.dumps(escaped))
    with pytest.raises(BundleError, match="leaves the bundle"):
        load_manifest(bundle)


def test_bundle_for_another_model_is_refused(onnx_bundle, tokenizer):
    manifest = load_manifest(onnx_bundle[0], verify=False)
    verify_bundle_matches(manifest, build_config("imp-tiny", tokenizer=tokenizer))  # the same model: fine
    with pytest.raises(BundleError, match="made for another model .*model id 'imp-tiny' != 'llava-phi-tiny'"):
        verify_bundle_matches(manifest, build_config("llava-phi-tiny", tokenizer=tokenizer))
    wider = build_config("imp-tiny", tokenizer=tokenizer, hidden_size=512, intermediate_size=2048)
    with pytest.raises(BundleError, match="embedding width 256 != 512"):
        verify_bundle_matches(manifest, wider)
    bigger = build_config("imp-v1-3b")
    with pytest.raises(BundleError, match=r"image tokens 16 != 729.*vocab size 1024 != 51200"):
        verify_bundle_matches(manifest, bigger)


def test_failed_parity_leaves_no_bundle_and_keeps_the_previous_one(
    onnx_bundle, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setitem(onnx_vision.PARITY_THRESHOLDS, "fp32", ParityThreshold(min_cos=1.01, mean_cos=1.01))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(ExportError, match=r"vision_encoder\.onnx \(fp32\) does not match PyTorch: cos min"):
        export_bundle(checkpoint, fresh / "bundle", gguf=[], onnx=["fp32"])
    assert list(fresh.iterdir()) == []  # neither the bundle nor its temp folder
    previous = copy_bundle(onnx_bundle[0], tmp_path)
    before = (previous / MANIFEST_FILE).read_text()
    with pytest.raises(ExportError):
        export_bundle(checkpoint, previous, gguf=[], onnx=["fp32"])
    assert (previous / MANIFEST_FILE).read_text() == before
    load_manifest(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", previous.name]


def test_bad_requests_fail_before_any_work(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="unknown ONNX precision 'int4'"):
        export_bundle(checkpoint, tmp_path / "b", onnx=["int4"])
    with pytest.raises(ExportError, match="unknown GGUF type 'q9_9'"):
        export_bundle(checkpoint, tmp_path / "b", gguf=["q9_9"])
    with pytest.raises(ExportError, match="nothing to export"):
        export_bundle(checkpoint, tmp_path / "b", gguf=[], onnx=[])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not a bundle: refusing to overwrite"):
        export_bundle(checkpoint, tmp_path / "notes", gguf=[], onnx=["fp32"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_wrong_tokenizer_is_refused(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = build_config("imp-tiny", tokenizer=tokenizer, image_token_index=5)  # the tokenizer says 2
    ckpt = save_checkpoint(ImpForCausalLM(config).eval(), tokenizer, tmp_path / "ckpt")
    with pytest.raises(ExportError, match="<image> id is 2, the model's image_token_index is 5"):
        export_bundle(ckpt, tmp_path / "b", gguf=[], onnx=["fp32"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ------------------------------------------------------------------------------------ other inputs


def test_upstream_layout_checkpoint(tokenizer, tmp_path):
    from test_checkpoint import upstream_config, upstream_state

    torch.manual_seed(0)
    model = ImpForCausalLM(build_config("imp-tiny", tokenizer=tokenizer)).eval()
    folder = tmp_path / "imp-upstream"
    folder.mkdir()
    raw = {**upstream_config(model, "msft"), "_name_or_path": "MILVLG/imp-tiny-upstream"}
    (folder / "config.json").write_text(json.dumps(raw))
    (folder / "modeling_imp.py").write_text("raise SystemExit('upstream code was executed')\n")
    save_file(
        {k: v.contiguous() for k, v in upstream_state(model, "msft").items()},
        str(folder / "model.safetensors"),
    )
    tokenizer.save_pretrained(folder)
    manifest = export_bundle(folder, tmp_path / "bundle", gguf=["f16"], onnx=["fp32"], validate=False)
    assert manifest.source.layout == "upstream" and manifest.model.id == "MILVLG/imp-tiny-upstream"
    assert manifest.model.image_tokens == 16 and manifest.template.name == "phi2"
    # the vision graph is the upstream model's tower (one layer dropped, no post-LN): same features
    import numpy as np
    import onnxruntime as ort

    pixels = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "bundle" / manifest.vision["fp32"].file))
    with torch.no_grad():
        ref = model.encode_images(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(session.run(None, {"pixel_values": pixels})[0], ref, atol=1e-5)


def test_llava_phi_bundle_template(tokenizer, tmp_path):
    ckpt = make_checkpoint(tokenizer, tmp_path / "llava", "llava-phi-tiny")
    manifest = export_bundle(ckpt, tmp_path / "bundle", gguf=[], onnx=["fp32"])
    assert manifest.template == TemplateInfo.from_name("phi-2_v0")
    assert manifest.template.stop_str == "<|endoftext|>" and manifest.tokens.stop == 0
    assert manifest.model.vision_tower == "clip_vision_model" and manifest.image["aspect_ratio"] == "pad"
    assert manifest.vision["fp32"].validation["min_cos"] >= 0.99999


# ------------------------------------------------------------------------------------ GGUF gates


def test_lm_gates_by_bits():
    assert lm_gate("f32") == lm_gate("bf16") == lm_gate("f16")
    assert lm_gate("q8_0").max_rel_logit_error < lm_gate("q4_k_m").max_rel_logit_error
    assert lm_gate("iq4_xs") == lm_gate("q4_0")
    assert lm_gate("q2_k").max_mean_kl >= lm_gate("q4_k_m").max_mean_kl
    ok = {"tokenization": {"match": True}, "logits": {"mean_abs_logit_error": 0.01, "mean_kl": 1e-3}}
    assert judge_lm(ok, logit_scale=1.0, qtype="q4_k_m")["passed"]
    bad = judge_lm(ok, logit_scale=0.01, qtype="q4_k_m")
    assert not bad["passed"] and "relative logit error 1 > 0.3" in bad["reason"]
    mistokenized = judge_lm({**ok, "tokenization": {"match": False}}, 1.0, "f16")
    assert not mistokenized["passed"] and "tokenizes" in mistokenized["reason"]
    nan = {"tokenization": {"match": True}, "logits": {"mean_abs_logit_error": float("nan"), "mean_kl": 0.0}}
    assert not judge_lm(nan, 1.0, "f16")["passed"]


@needs_llama_cpp
def test_full_bundle_with_quantized_gguf(checkpoint, tmp_path, record_property):
    out = tmp_path / "bundle"
    manifest = export_bundle(
        checkpoint, out, gguf=["f16", "q8_0", "q4_k_m"], onnx=["fp32", "int8"], threads=2
    )
    m = load_manifest(out)
    assert list(m["lm"]) == ["f16", "q8_0", "q4_k_m"] and list(m["vision"]) == ["fp32", "int8"]
    assert m["lm"]["q4_k_m"]["file"] == "gguf/model-q4_k_m.gguf"
    assert m["lm"]["q4_k_m"]["details"]["quantized_from"] == "f16"
    for precision, entry in m["lm"].items():
        validation = entry["validation"]
        assert validation["verdict"]["passed"], precision
        assert validation["tokenization"]["match"]
        assert validation["n_image_prompts"] == 3 and validation["n_prompts"] == 5
        record_property(f"{precision}_rel_logit_error", validation["verdict"]["relative_logit_error"])
    f16 = m["lm"]["f16"]["validation"]
    assert f16["greedy"]["exact_match"] == 1.0 and f16["logits"]["top1_agreement"] == 1.0
    sizes = {p: m["files"][e["file"]]["bytes"] for p, e in m["lm"].items()}
    assert sizes["q4_k_m"] < sizes["f16"] and sizes["q8_0"] < sizes["f16"]
    assert manifest.timings["reference_seconds"] > 0
    assert m["tools"]["llama_cpp"] is not None


@needs_llama_cpp
def test_gguf_base_not_asked_for_is_not_kept_and_imatrix(checkpoint, tmp_path):
    manifest = export_bundle(checkpoint, tmp_path / "b", gguf=["q8_0"], onnx=[], validate=False, imatrix=True)
    assert list(manifest.lm) == ["q8_0"] and manifest.lm["q8_0"].details["quantized_from"] == "f16"
    assert manifest.lm["q8_0"].details["imatrix"] and manifest.calibration["gguf"]["prompts"]
    assert sorted(p.name for p in (tmp_path / "b" / "gguf").iterdir()) == ["model-q8_0.gguf"]
    assert not (tmp_path / "b" / ".scratch").exists()


# ------------------------------------------------------------------------------------ CLI


def test_cli_export_and_info(checkpoint, tmp_path, capsys):
    """A vision-only bundle (``--gguf none``), validated, then described and verified by ``imp info``."""
    out = tmp_path / "bundle"
    argv = ["export", str(checkpoint), "--out", str(out), "--gguf", "none", "--onnx", "fp16,int8"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "onnx/vision_encoder_fp16.onnx" in printed and "cos min" in printed and "total" in printed
    m = load_manifest(out)
    assert m["lm"] == {} and list(m["vision"]) == ["fp16", "int8"]
    fp16 = m["vision"]["fp16"]["validation"]
    assert fp16["passed"] and fp16["min_cos"] >= 0.999
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "imp-tiny" in info and "all files verified" in info and "vision_encoder_q8.onnx" in info
    assert "stop '</s>'" in info and "16 image tokens" in info
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["id"] == "imp-tiny"
    (out / "onnx" / "vision_encoder_fp16.onnx").write_bytes(b"not a graph")
    assert main(["info", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imp info: error:") and "onnx/vision_encoder_fp16.onnx" in err and "\n" not in err


def test_cli_refuses_unknown_precision(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "b"), "--onnx", "fp8"]) == 2
    assert "unknown ONNX precision 'fp8'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ tokenizer check

OTHER_TEXTS = [
    "Once upon a time a small fox crossed the frozen river at night.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "USER: Where did the fox go? ASSISTANT: across the river</s>",
] * 3


def test_another_models_tokenizer_is_refused_and_nothing_is_left(checkpoint, tmp_path, capsys):
    """Same special tokens at the same ids, another vocabulary: every parity check would pass."""
    other = tmp_path / "other-tokenizer"
    train_tokenizer(OTHER_TEXTS, 400, other)
    out = tmp_path / "new" / "deep" / "bundle"
    argv = ["export", str(checkpoint), "--out", str(out), "--gguf", "none", "--no-validate"]
    assert main([*argv, "--tokenizer", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--tokenizer {other} is not the checkpoint's tokenizer" in err
    assert re.search(r"id \d+ is '.*' there and '.*' in ", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-tokenizer"]  # not even the parents


def test_tokenizer_larger_than_the_embedding_is_refused(checkpoint, tmp_path):
    from impvlm.tokenizer import load_tokenizer, save_tokenizer

    bigger = load_tokenizer(checkpoint)
    bigger.add_tokens([f"<extra{i}>" for i in range(1100)])
    save_tokenizer(bigger, tmp_path / "bigger")
    with pytest.raises(ExportError, match=r"the tokenizer has \d+ tokens .*model embeds only 1024"):
        export_bundle(checkpoint, tmp_path / "b", gguf=[], onnx=["fp32"], tokenizer_dir=tmp_path / "bigger")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigger"]


def test_config_special_id_that_is_an_ordinary_token_is_refused(tokenizer, tmp_path):
    ordinary = tokenizer.encode(" red", add_special_tokens=False)[0]
    word = tokenizer.convert_ids_to_tokens(ordinary)
    assert ordinary not in tokenizer.all_special_ids and ordinary not in tokenizer.added_tokens_decoder
    config = build_config("imp-tiny", tokenizer=tokenizer, pad_token_id=ordinary)
    ckpt = save_checkpoint(ImpForCausalLM(config).eval(), tokenizer, tmp_path / "ckpt")
    with pytest.raises(
        ExportError, match=rf"pad_token_id {ordinary} is the ordinary token {re.escape(repr(word))}"
    ):
        export_bundle(ckpt, tmp_path / "b", gguf=[], onnx=["fp32"], validate=False)


def test_tokenizer_hash_and_checks_are_recorded(onnx_bundle, checkpoint, tmp_path):
    from tokenizers import Tokenizer

    out, manifest = onnx_bundle
    info = load_manifest(out)["tokenizer_info"]
    bundled = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    assert info["sha256"] == tokenizer_sha256(bundled) and info["source"] == "checkpoint"
    assert info["tokens"] < manifest.model.vocab_size  # padding rows after the last id are fine
    assert info["checked"] == [CHECK_EMBEDDING, CHECK_SPECIAL_IDS]
    copy = Path(shutil.copytree(checkpoint, tmp_path / "same-tokenizer"))
    second = export_bundle(
        checkpoint, tmp_path / "b", gguf=[], onnx=["fp32"], validate=False, tokenizer_dir=copy
    )
    assert second.tokenizer_info.checked[-1] == CHECK_CHECKPOINT
    assert (
        second.tokenizer_info.source == str(copy.resolve()) and second.tokenizer_info.sha256 == info["sha256"]
    )


# ------------------------------------------------------------------------------------ manifest vs files


def edit_manifest(bundle: Path, edit) -> None:
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rehash(bundle: Path, rel: str) -> None:
    """What a deliberate editor does: write the changed file's sha256 and size into the manifest."""

    def edit(data):
        data["files"][rel].update(sha256=sha256_file(bundle / rel), bytes=(bundle / rel).stat().st_size)

    edit_manifest(bundle, edit)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m["model"].update(image_tokens=17),
            r"onnx/vision_encoder\.onnx says image tokens 16, manifest\.json says 17",
        ),
        (
            lambda m: m["template"].update(system="You are a pirate."),
            r"template 'phi2' system 'You are a pirate\.' is not the one",
        ),
        (
            lambda m: m["tokens"].update(stop=0),
            r"tokens\.stop is 0, which is '<\|endoftext\|>' in .* not '</s>'",
        ),
        (lambda m: m["tokens"].update(eos=2), r"model-f16\.gguf says eos token id 1, manifest\.json says 2"),
        (
            lambda m: (m["image"].update(size=128), m["model"].update(image_size=128)),
            r"vision_encoder\.onnx says image size 64, manifest\.json says 128",
        ),
        (lambda m: m["image"].update(size=128), r"image size 128 is not the model's image_size 64"),
        (
            lambda m: m["model"].update(embedding_width=512),
            r"says embedding width 256, manifest\.json says 512",
        ),
    ],
)
def test_edited_manifest_is_refused(onnx_bundle, tmp_path, edit, message):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=message) as caught:
        load_manifest(bundle)
    assert "\n" not in str(caught.value)


def test_malformed_image_section_is_one_line_even_unverified(onnx_bundle, tmp_path, capsys):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    edit_manifest(bundle, lambda m: m["image"].update(size="large"))
    with pytest.raises(BundleError, match=r"malformed: image section .*'large'"):
        load_manifest(bundle, verify=False)
    edit_manifest(bundle, lambda m: (m["image"].update(size=64), m["tokens"].update(stop="</s>")))
    with pytest.raises(BundleError, match=r"malformed: tokens\.stop is '</s>', not a non-negative integer"):
        load_manifest(bundle, verify=False)
    assert main(["info", str(bundle), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imp info: error:") and "\n" not in err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("general.file_type", 7, r"model-f16\.gguf says file type 7, manifest\.json says 1"),
        ("tokenizer.ggml.eos_token_id", 0, r"model-f16\.gguf says eos token id 0, manifest\.json says 1"),
    ],
)
def test_gguf_edited_together_with_its_hash_is_refused(onnx_bundle, tmp_path, key, value, message):
    import gguf

    assert key in (gguf.Keys.General.FILE_TYPE, gguf.Keys.Tokenizer.EOS_ID)
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    rel = "gguf/model-f16.gguf"
    reader = gguf.GGUFReader(str(bundle / rel), "r+")
    field = reader.fields[key]
    field.parts[field.data[0]][0] = value
    reader.data.flush()
    del reader
    rehash(bundle, rel)
    with pytest.raises(BundleError, match=message):
        load_manifest(bundle)


def test_tokenizer_swapped_together_with_its_hash_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle[0], tmp_path)
    other = train_tokenizer(OTHER_TEXTS, 400, tmp_path / "other")
    rel = "tokenizer/tokenizer.json"
    shutil.copy(tmp_path / "other" / "tokenizer.json", bundle / rel)
    rehash(bundle, rel)
    with pytest.raises(
        BundleError, match=r"tokenizer\.json is not the tokenizer the bundle was exported with"
    ):
        load_manifest(bundle)
    edit_manifest(
        bundle, lambda m: m["tokenizer_info"].update(sha256=tokenizer_sha256(other.backend_tokenizer))
    )
    with pytest.raises(BundleError, match=r"model-f16\.gguf has token \d+ '.*', the bundle's tokenizer '.*'"):
        load_manifest(bundle)


def test_graph_io_reads_shapes_without_loading_weights(onnx_bundle, tmp_path):
    import onnx

    out, _ = onnx_bundle
    for name in ("vision_encoder.onnx", "vision_encoder_q8.onnx"):
        graph = onnx.load(str(out / "onnx" / name), load_external_data=False).graph
        want = {
            v.name: tuple(
                d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim
            )
            for v in [*graph.input, *graph.output]
        }
        io = graph_io(out / "onnx" / name)
        assert {**io.inputs, **io.outputs} == want
        assert io.inputs["pixel_values"] == ("batch", 3, 64, 64) or isinstance(
            io.inputs["pixel_values"][0], str
        )
    data = (out / "onnx" / "vision_encoder.onnx").read_bytes()
    for bad in (data[: len(data) // 2], b"not a graph", b""):
        (tmp_path / "bad.onnx").write_bytes(bad)
        with pytest.raises(OnnxFormatError):
            graph_io(tmp_path / "bad.onnx")


# ------------------------------------------------------------------------------------ --out


def test_out_under_a_regular_file_is_one_line(checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for out in (tmp_path / "notes.txt" / "bundle", tmp_path / "notes.txt" / "a" / "b"):
        assert main(["export", str(checkpoint), "--out", str(out), "--gguf", "none", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err
            == f"imp export: error: cannot write the bundle {out}: {tmp_path / 'notes.txt'} is a file, not a folder"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_read_only_folder_is_one_line(checkpoint, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["export", str(checkpoint), "--out", str(locked / "b" / "c"), "--gguf", "none"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"cannot write the bundle {locked / 'b' / 'c'}: Permission denied" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_out_where_the_file_system_refuses_writes_is_one_line(checkpoint, capsys):
    """sysfs accepts no new folders, for root neither: a file system that cannot be written."""
    out = Path("/sys/kernel/impvlm-bundle/b")
    assert main(["export", str(checkpoint), "--out", str(out), "--gguf", "none", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"imp export: error: cannot write the bundle {out}: ")
    assert not out.parent.exists()
