"""ExportedRuntime (ONNX Runtime + llama.cpp) against TorchRuntime: same greedy answers."""

import json
import shutil
import subprocess
import sys

import pytest
from logit_gaps import GapTorch, partings

from impvlm.errors import BundleError, ConfigError, ImageError
from runtimes.loader import load_runtime

QUESTIONS = ["What colour is the shape?", "How many shapes are there?", "Is there a red circle?"]


@pytest.fixture(scope="module")
def images(synthetic_world):
    paths, _ = synthetic_world
    return sorted(paths.images.glob("eval_*.png"))[:3]


#: PyTorch's top-2 logit gap within which the f32 GGUF may choose the other token: llama.cpp's f32
#: graph and PyTorch's differ by about 2e-4 of a logit on the tiny model (measured; its activation and
#: attention kernels round otherwise), so a near-tie that close may go either way.
F32_TIE = 1e-3


@pytest.fixture(scope="module")
def torch_answers(tiny_checkpoint, images):
    """PyTorch's greedy ``(token ids, top-2 gap at each step)`` for every image and question."""
    with GapTorch(tiny_checkpoint, threads=1) as rt:
        return [
            (rt.generate([im], q, max_new_tokens=12).token_ids, rt.gaps) for im in images for q in QUESTIONS
        ]


# f32 is compared on any model; f16 on the trained model (tests/test_pipeline.py), since a random
# model's nearly flat next-token distributions make ties that f16 rounding may break.
@pytest.mark.parametrize("lm", ["f32"])
def test_exported_greedy_answers_equal_pytorch_but_at_near_ties(tiny_bundle, images, torch_answers, lm):
    with load_runtime(tiny_bundle, lm=lm, vision="fp32", threads=1) as rt:
        got = [rt.generate([im], q, max_new_tokens=12).token_ids for im in images for q in QUESTIONS]
        assert rt.identity()["lm"] == lm and rt.identity()["vision"] == "fp32"
    parted = partings(torch_answers, got)
    assert len(parted) <= 1 and all(gap < F32_TIE for gap in parted), parted


def test_quantized_variants_run_and_report_timings(tiny_bundle, images):
    with load_runtime(f"exported:{tiny_bundle}?lm=q4_k_m&vision=int8&threads=1") as rt:
        first = rt.generate([images[0]], QUESTIONS[0], max_new_tokens=6)
        second = rt.generate([images[0]], QUESTIONS[1], max_new_tokens=6)
    t1, t2 = first.timings, second.timings
    assert t1.images_encoded == 1 and t2.images_encoded == 0
    assert t2.reused_tokens >= rt.num_image_tokens and t2.prefill_tokens < t1.prefill_tokens
    assert t1.prefill_tokens_per_s > 0 and t1.ttft_s > 0 and t1.peak_rss_mb > 0


def test_streaming_matches_the_answer(tiny_bundle, images):
    with load_runtime(tiny_bundle, lm="f16", threads=1) as rt:
        chunks = list(rt.stream([images[0]], QUESTIONS[0], max_new_tokens=10))
        assert "".join(chunks).strip() == rt.generate([images[0]], QUESTIONS[0], max_new_tokens=10).text


def test_mobile_profile_and_memory_budget(tiny_bundle):
    with load_runtime(tiny_bundle, profile="mobile") as rt:
        ident = rt.identity()
        assert ident["lm"] == "q4_k_m" and ident["vision"] == "fp16" and rt.context_length == 512
    with pytest.raises(BundleError, match="does NOT fit 1 MB"):
        load_runtime(tiny_bundle, memory_budget_mb=1)
    with pytest.raises(ConfigError, match="has no LM precision 'q5_k_m'"):
        load_runtime(tiny_bundle, lm="q5_k_m")


def test_tampered_and_mismatched_bundles_are_refused(tiny_bundle, tmp_path, tiny_checkpoint):
    bad = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    gguf = bad / manifest["lm"]["f16"]["file"]
    data = bytearray(gguf.read_bytes())
    data[-10] ^= 0xFF
    gguf.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model-f16.gguf"):
        load_runtime(bad)
    (bad / manifest["vision"]["fp32"]["file"]).unlink()
    with pytest.raises(BundleError, match="vision_encoder.onnx"):
        load_runtime(bad, verify=False, lm="f32")


def test_undecodable_image_and_too_many_images(tiny_bundle, images, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"GIF89a not really")
    with load_runtime(tiny_bundle, lm="f16", threads=1) as rt:
        with pytest.raises(ImageError, match="junk.jpg"):
            rt.generate([junk], "What?")
        with pytest.raises(Exception, match="1 <image> tags but 2 images"):
            rt.generate(images[:2], "<image>\nWhat?")


def test_chat_and_info_cli(tiny_bundle, images):
    chat = subprocess.run(
        [
            sys.executable,
            "-m",
            "impvlm.cli",
            "chat",
            str(tiny_bundle),
            "--image",
            str(images[0]),
            QUESTIONS[0],
            "--lm",
            "q8_0",
            "--timings",
            "--max-new-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert chat.returncode == 0, chat.stderr
    assert "decode" in chat.stderr
    info = subprocess.run(
        [sys.executable, "-m", "impvlm.cli", "info", str(tiny_bundle)], capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
    assert "q4_k_m" in info.stdout


def test_exported_runtime_process_never_imports_torch():
    """The deployment path (ONNX Runtime + llama.cpp) must not pay torch's memory: measured 265 MB."""
    code = (
        "import sys, runtimes.exported, runtimes.native, export.llama, impvlm; "
        "impvlm.get_template; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.fixture(scope="module")
def plain_bundle(tiny_checkpoint, tmp_path_factory):
    """fp32 vision + f32 LM, unvalidated: enough to load, quick to make."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("plain") / "bundle"
    export_bundle(tiny_checkpoint, out, gguf=["f32"], onnx=["fp32"], validate=False)
    return out


def test_edited_image_size_is_one_line_not_a_traceback(plain_bundle, images, tmp_path):
    bad = tmp_path / "edited"
    shutil.copytree(plain_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["image"]["size"] = manifest["model"]["image_size"] = 128
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"vision_encoder\.onnx says image size 64, manifest\.json says 128"
    ):
        load_runtime(bad)
    with pytest.raises(
        BundleError, match=r"vision_encoder\.onnx says image size 64, manifest\.json says 128"
    ):
        load_runtime(bad, verify=False)  # the graph the runtime opens is checked without hashing
    chat = subprocess.run(
        [sys.executable, "-m", "impvlm.cli", "chat", str(bad), "--image", str(images[0]), "What?"],
        capture_output=True,
        text=True,
    )
    assert chat.returncode == 2 and "Traceback" not in chat.stderr
    assert chat.stderr.strip().startswith("imp chat: error:") and "\n" not in chat.stderr.strip()


def test_loading_a_bundle_checks_it_without_torch(plain_bundle):
    """The manifest checks (ONNX graph shapes, GGUF metadata, tokenizer) stay on the deployment path."""
    code = (
        "import sys; from export.manifest import load_manifest; "
        f"m = load_manifest({str(plain_bundle)!r}); "
        "print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_runtimes_read_a_bundle_without_the_export_writers(plain_bundle, images):
    """Reading a bundle and encoding an image takes the bundle format and the llama.cpp bindings, not
    the bundle writer nor the mmproj writer."""
    code = (
        "import sys, runtimes.native; from runtimes.exported import ExportedRuntime; "
        f"rt = ExportedRuntime({str(plain_bundle)!r}, threads=1); "
        f"rt.generate([{str(images[0])!r}], 'What?', max_new_tokens=2); "
        "print(sorted(m for m in ('export.bundle', 'export.mmproj', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def with_template(bundle, folder, name, **strings):
    """A copy of ``bundle`` whose manifest carries the template ``name`` spelled out from the bundle's
    own strings, with ``strings`` (e.g. ``system``) replaced."""
    from dataclasses import asdict

    from export.manifest import TemplateInfo
    from impvlm.templates import Template

    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    stored = {k: manifest["template"][k] for k in ("style", "system", "sep", "sep2")}
    template = Template(name, roles=tuple(manifest["template"]["roles"]), **{**stored, **strings})
    manifest["template"] = asdict(TemplateInfo.of(template))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_template_impvlm_does_not_know_chats_from_the_stored_strings(plain_bundle, images, tmp_path):
    from impvlm.templates import TEMPLATES, Turn, get_template

    turns = [Turn("user", "<image>\nHi"), Turn("assistant", "Hello."), Turn("user", "And now?")]
    with load_runtime(plain_bundle, threads=1) as rt:  # a known template renders as impvlm's does
        assert rt.render(turns, 1) == get_template("phi2").prompt(turns, add_generation_prompt=True)
    renamed = with_template(plain_bundle, tmp_path / "renamed", "house-phi2")
    assert "house-phi2" not in TEMPLATES
    with load_runtime(renamed, threads=1) as rt:
        assert rt.template.name == "house-phi2"
        assert rt.render(turns, 1) == get_template("phi2").prompt(turns, add_generation_prompt=True)
        got = [rt.generate([images[0]], q, max_new_tokens=12).token_ids for q in QUESTIONS]
    with load_runtime(plain_bundle, threads=1) as rt:
        known = [rt.generate([images[0]], q, max_new_tokens=12).token_ids for q in QUESTIONS]
    assert got == known  # the same strings: the same answers
    pirate = with_template(plain_bundle, tmp_path / "pirate", "pirate", system="You are a pirate.")
    with load_runtime(pirate, threads=1) as rt:
        assert rt.render("Ahoy?", 1) == "You are a pirate. USER: <image>\nAhoy? ASSISTANT:"
        assert rt.generate([images[0]], "Ahoy?", max_new_tokens=4).token_ids


def test_a_template_whose_strings_disagree_is_refused(plain_bundle, tmp_path):
    bundle = with_template(plain_bundle, tmp_path / "odd", "house-phi2")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["template"]["question_prompt"] = "Q: {question} A:"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="template 'house-phi2' question_prompt .* does not follow from"):
        load_runtime(bundle)
    manifest["template"]["style"] = "three"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="malformed: template 'house-phi2' needs a style of two, plain"):
        load_runtime(bundle, verify=False)


def test_compare_reads_the_export_checks_from_the_typed_manifest(tiny_bundle):
    from benchmarks.compare import Run
    from export.manifest import load_manifest

    identity = {"runtime": "exported", "bundle": str(tiny_bundle), "lm": "q4_k_m", "vision": "int8"}
    on_disk = load_manifest(tiny_bundle)
    logits = on_disk["lm"]["q4_k_m"]["validation"]["logits"]
    assert Run(tiny_bundle, identity, {}).token_level() == {
        "lm_top1_agreement": logits["top1_agreement"],
        "lm_mean_kl": logits["mean_kl"],
        "vision_min_cos": on_disk["vision"]["int8"]["validation"]["min_cos"],
    }
    assert Run(tiny_bundle, {**identity, "lm": "q5_k_m", "vision": None}, {}).token_level() is None
