"""The artifact-kind protocol: one plan check per kind, and the shared write / quantize / gate loop
run for real (tiny model, llama.cpp's quantizer and llama.cpp itself)."""

from __future__ import annotations

import importlib.util
import io

import pytest
import torch
from tqdm import tqdm

from export.errors import ExportError
from export.kinds.base import Steps
from export.kinds.lm import GgufLM
from export.kinds.registry import KINDS, kind_of
from export.manifest import Kind
from impvlm import ImpForCausalLM, build_config
from impvlm.templates import get_template
from impvlm.tokenizer import SYSTEM_PROMPT, train_tokenizer

CORPUS = [
    SYSTEM_PROMPT,
    "USER: What colour is the circle? ASSISTANT: The circle is red.</s>",
    "USER: How many squares are there? ASSISTANT: There are two squares.</s>",
] * 8


def test_every_kind_plans_its_own_precisions_once():
    assert [kind.section for kind in KINDS] == [
        Kind.VISION,
        Kind.LM,
        Kind.MMPROJ,
    ]  # the mmproj runs with the LM
    for kind in KINDS:
        best = kind.choices[0]
        assert kind.plan([f" {best.upper()} ", best, ""]) == (best,)
        with pytest.raises(ExportError, match=f"unknown {kind.noun} 'nope'; choose from {best}"):
            kind.plan([best, "nope"])
        assert len({kind.filename(p) for p in kind.choices}) == len(kind.choices)
        assert kind.base_precision(kind.choices) in kind.choices
        assert kind_of(str(kind.section)) is kind
    assert kind_of("lm").base_precision(["q8_0", "f32"]) == "f32"
    assert kind_of("mmproj").base_precision(["q4_k_m"]) == "f16"


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_a_base_not_asked_for_is_written_to_scratch_and_every_step_is_counted(tmp_path):
    tok = train_tokenizer(CORPUS, 600, tmp_path / "tokenizer")
    torch.manual_seed(0)
    model = ImpForCausalLM(build_config("imp-tiny", tokenizer=tok)).eval()
    prompts = [get_template("phi2").question_prompt("How many squares are there?", with_image=False)]
    with tqdm(total=0, file=io.StringIO()) as bar:
        kind = GgufLM(model, tok, prompts, threads=1, steps=Steps(bar))
        wanted = GgufLM.plan(["q8_0"])
        bar.total = kind.n_steps(wanted, validate=True)
        files = kind.export(tmp_path / "gguf", wanted)
        assert bar.n == bar.total == 4  # f16 base, q8_0, the PyTorch reference, the check
    assert list(files) == ["q8_0"]
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["model-q8_0.gguf"]  # no base, no scratch
    q8 = files["q8_0"]
    assert q8.details == {"quantized_from": "f16", "imatrix": False} and q8.export_seconds >= 0
    assert q8.validation is not None and q8.validation["verdict"]["passed"] and q8.validation_seconds >= 0
    assert kind.steps.timings["reference_seconds"] >= 0
    assert GgufLM.describe(q8.validation).startswith("rel logit err ")
