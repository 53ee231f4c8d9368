"""GGUF export of the Phi-2 LM: the file, llama.cpp parity (text and image embeddings), quantization.

Tiny random models (hidden 256, so K-quants are real K-quants) written to GGUF, loaded in the real
llama.cpp (llama-cpp-python) and compared with PyTorch.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from gguf import GGUFReader, Keys, TokenType  # noqa: E402

from export.errors import ExportError  # noqa: E402
from export.gguf_lm import write_gguf  # noqa: E402
from export.gguf_validate import llama_run, torch_reference, validate_gguf  # noqa: E402
from export.llama import LlamaSession  # noqa: E402
from export.quantize import (  # noqa: E402
    QUANT_TYPES,
    compute_imatrix,
    load_imatrix,
    quantize_gguf,
    tensor_types,
)
from impvlm import ImpForCausalLM, build_config  # noqa: E402
from impvlm.templates import get_template  # noqa: E402
from impvlm.tokenizer import SYSTEM_PROMPT, load_tokenizer, train_tokenizer  # noqa: E402

ARCH = "phi2"
#: One llama.cpp thread: ggml's spinning thread pool stalls badly on a shared, oversubscribed CI box,
#: and the tiny models gain nothing from more.
THREADS = 1
IMAGE_ID, EOS_ID, PAD_ID = 2, 1, 0
CORPUS = [
    SYSTEM_PROMPT,
    "USER: What colour is the circle? ASSISTANT: The circle is red.</s>",
    "USER: How many squares are there? ASSISTANT: There are two squares.</s>",
    "A blue square is on the left of a green triangle, and a yellow star is at the top.",
    "Is there a word written in the image? Yes, the word is HELLO.",
] * 8
STRESS_TEXTS = [
    "  leading spaces,\ttabs\nand newlines\n\n",
    "Unicode: héllo wörld — 東京 🙂 done.",
    "special inside text: <image> and </s> and <|endoftext|>!",
    "numbers 12345 and punctuation ?!.,;:'\"()[]",
]


def kv(reader: GGUFReader, key: str):
    field = reader.get_field(key)
    assert field is not None, f"missing GGUF key {key}"
    return field.contents()


def llm_key(key: str) -> str:
    return key.format(arch=ARCH)


def tiny_model(tok, seed: int = 0, **overrides) -> ImpForCausalLM:
    torch.manual_seed(seed)
    return ImpForCausalLM(build_config("imp-tiny", tokenizer=tok, **overrides)).eval()


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def tok(work: Path):
    return train_tokenizer(CORPUS, 600, work / "tokenizer")


@pytest.fixture(scope="module")
def model(tok) -> ImpForCausalLM:
    return tiny_model(tok)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    t = get_template("phi2")
    return [
        t.question_prompt("What colour is the circle?"),
        t.question_prompt("How many squares are there?", with_image=False),
        "A blue square is on the left <image> of a green triangle.",
    ]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def base(model, tok, work: Path) -> Path:
    return write_gguf(model, tok, work / "lm-f32.gguf", dtype="f32")


@pytest.fixture(scope="module")
def reference(model, tok, prompts, pixels):
    return torch_reference(model, tok, prompts, pixels, n_greedy=16)


# ------------------------------------------------------------------------------------------ the file
def test_metadata_tokenizer_and_tensors(base: Path, model, tok, work: Path) -> None:
    reader = GGUFReader(str(base))
    cfg = model.config
    assert kv(reader, Keys.General.ARCHITECTURE) == ARCH
    assert kv(reader, Keys.General.NAME) == "imp-tiny"
    assert kv(reader, Keys.General.FILE_TYPE) == int(gguf.LlamaFileType.ALL_F32)
    assert kv(reader, llm_key(Keys.LLM.CONTEXT_LENGTH)) == cfg.max_position_embeddings == 512
    assert kv(reader, llm_key(Keys.LLM.EMBEDDING_LENGTH)) == 256
    assert kv(reader, llm_key(Keys.LLM.FEED_FORWARD_LENGTH)) == 1024
    assert kv(reader, llm_key(Keys.LLM.BLOCK_COUNT)) == 4
    assert kv(reader, llm_key(Keys.Attention.HEAD_COUNT)) == 4
    assert kv(reader, llm_key(Keys.Attention.HEAD_COUNT_KV)) == 4
    assert kv(reader, llm_key(Keys.Attention.LAYERNORM_EPS)) == pytest.approx(1e-5)
    assert kv(reader, llm_key(Keys.Rope.DIMENSION_COUNT)) == 32  # 0.5 x head_dim 64

    assert kv(reader, Keys.Tokenizer.MODEL) == "gpt2"
    assert kv(reader, Keys.Tokenizer.PRE) == "phi-2"
    tokens = kv(reader, Keys.Tokenizer.LIST)
    types = kv(reader, Keys.Tokenizer.TOKEN_TYPE)
    n_rows = model.get_input_embeddings().weight.shape[0]
    assert len(tokens) == len(types) == n_rows == 1024 > len(tok)
    assert tokens[:3] == ["<|endoftext|>", "</s>", "<image>"]
    assert types[:3] == [TokenType.CONTROL] * 3
    assert tokens[len(tok)] == f"[PAD{len(tok)}]" and set(types[len(tok) :]) == {TokenType.UNUSED}
    vocab = tok.get_vocab()
    assert all(tokens[i] == t for t, i in vocab.items())
    assert set(types[3 : len(tok)]) == {TokenType.NORMAL}
    merges = kv(reader, Keys.Tokenizer.MERGES)
    merges_txt = (work / "tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert merges == merges_txt and len(merges) > 0
    assert kv(reader, Keys.Tokenizer.EOS_ID) == EOS_ID
    assert kv(reader, Keys.Tokenizer.PAD_ID) == PAD_ID
    assert kv(reader, Keys.Tokenizer.BOS_ID) == PAD_ID  # no bos: <|endoftext|>, never added
    assert kv(reader, Keys.Tokenizer.UNK_ID) == PAD_ID
    assert kv(reader, Keys.Tokenizer.ADD_BOS) is False

    names = {t.name for t in reader.tensors}
    per_block = {"attn_norm", "attn_qkv", "attn_output", "ffn_up", "ffn_down"}
    expected = {f"{n}.{s}" for n in ("output_norm", "output") for s in ("weight", "bias")}
    expected |= {"token_embd.weight"}
    expected |= {f"blk.{b}.{n}.{s}" for b in range(4) for n in per_block for s in ("weight", "bias")}
    assert names == expected  # the LM only: no vision tower, no projector
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
    qkv = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
    assert list(qkv.shape) == [256, 768]  # GGUF order: (in, out)


def test_f16_base_keeps_norms_and_biases_f32(model, tok, work: Path) -> None:
    path = write_gguf(model, tok, work / "lm-f16.gguf", dtype="f16")
    reader = GGUFReader(str(path))
    assert kv(reader, Keys.General.FILE_TYPE) == int(gguf.LlamaFileType.MOSTLY_F16)
    for t in reader.tensors:
        assert t.tensor_type.name == ("F16" if len(t.shape) == 2 else "F32"), t.name


def test_write_is_atomic_and_rejects_unknown_dtype(model, tok, work: Path) -> None:
    with pytest.raises(ExportError, match="f32, f16"):
        write_gguf(model, tok, work / "bad.gguf", dtype="q4_0")
    assert not (work / "bad.gguf").exists()
    assert not list(work.glob("*.tmp"))


# ------------------------------------------------------------------------------------------ parity
def test_tokenization_matches_hf(base: Path, tok, prompts) -> None:
    with LlamaSession(base, n_ctx=512, n_threads=THREADS) as s:
        for text in prompts + STRESS_TEXTS + CORPUS[:5]:
            ids = tok(text, add_special_tokens=False).input_ids
            assert s.tokenize(text) == ids, text
            assert s.detokenize(ids, skip_special=False) == tok.decode(ids), text
            assert s.detokenize(ids) == tok.decode(ids, skip_special_tokens=True), text
        assert s.tokenize("<image>") == [IMAGE_ID]
        assert s.tokenize("</s>") == [EOS_ID]
        assert s.eos_id == EOS_ID and s.is_eog(EOS_ID)


def test_added_tokens_are_user_defined_and_tokenize_like_hf(tok, work: Path) -> None:
    # Phi-2's tokenizer adds whitespace runs as ordinary (non-special) added tokens
    tok2 = load_tokenizer(work / "tokenizer")
    assert tok2.add_tokens(["    ", "   ", "  "]) == 3
    path = write_gguf(tiny_model(tok2), tok2, work / "added-tokens.gguf")
    types = kv(GGUFReader(str(path)), Keys.Tokenizer.TOKEN_TYPE)
    assert types[len(tok) : len(tok2)] == [TokenType.USER_DEFINED] * 3
    with LlamaSession(path, n_ctx=256, n_threads=THREADS) as s:
        for text in ["a    b   c  d e", "def f():\n    return  1", "x<image>    y</s>"]:
            ids = tok2(text, add_special_tokens=False).input_ids
            assert s.tokenize(text) == ids
            assert s.detokenize(ids, skip_special=False) == tok2.decode(ids)
            assert s.detokenize(ids) == tok2.decode(ids, skip_special_tokens=True)


def test_f32_logits_match_pytorch_text_and_image(base: Path, model, reference) -> None:
    # f32 KV cache and no flash attention: the only remaining difference is ggml's GELU (below)
    with LlamaSession(
        base, n_ctx=256, n_threads=THREADS, all_logits=True, kv_type="f32", flash_attn=False
    ) as s:
        for i, probe in enumerate(reference.probes):
            got, greedy = llama_run(s, probe, reference.features[i], IMAGE_ID, reference.n_greedy)
            ref = reference.logits[i]
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() < 2e-3
            assert np.abs(got - ref).mean() < 3e-4
            assert (got.argmax(-1) == ref.argmax(-1)).all()
            assert greedy == reference.greedy[i]
    assert sum(p.pixel_values is not None for p in reference.probes) == 2
    n_img = model.config.num_image_tokens
    assert reference.logits[0].shape[0] == len(reference.probes[0].ids) - 1 + n_img


class GgmlGelu(torch.nn.Module):
    """ggml's CPU GELU: the tanh GELU looked up in an fp16 table (input and output rounded to fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.half().float()
        y = (0.5 * h * (1 + torch.tanh(0.7978845608028654 * h * (1 + 0.044715 * h * h)))).half().float()
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


def test_f32_export_is_exact_up_to_ggml_gelu(tok, prompts, pixels, work: Path) -> None:
    # One layer, so that a pre-activation rounding to the other side of an fp16 step cannot compound.
    model = tiny_model(tok, seed=3, num_hidden_layers=1)
    path = write_gguf(model, tok, work / "one-layer.gguf")
    emulated = copy.deepcopy(model)
    for layer in emulated.model.layers:
        layer.mlp.activation_fn = GgmlGelu()
    ref = torch_reference(emulated, tok, prompts, pixels, n_greedy=1)
    with LlamaSession(
        path, n_ctx=256, n_threads=THREADS, all_logits=True, kv_type="f32", flash_attn=False
    ) as s:
        for i, probe in enumerate(ref.probes):
            got, _ = llama_run(s, probe, ref.features[i], IMAGE_ID, 1)
            per_position = np.abs(got - ref.logits[i]).max(-1)
            assert np.median(per_position) < 1e-5
            assert per_position.max() < 1e-3


def test_validate_gguf_f32_report(base: Path, model, tok, prompts, pixels, reference) -> None:
    report = validate_gguf(
        model, tok, base, prompts, pixels, n_greedy=16, reference=reference, n_threads=THREADS
    )
    json.dumps(report)
    assert report["quant_type"] == "f32" and report["n_prompts"] == 3 and report["n_image_prompts"] == 2
    assert report["tokenization"]["match"]
    logits = report["logits"]
    assert logits["n_positions"] == sum(lg.shape[0] for lg in reference.logits)
    assert logits["max_abs_logit_error"] < 3e-3  # default session: f16 KV cache, flash attention auto
    assert logits["top1_agreement"] == 1.0 and logits["mean_kl"] < 1e-6
    assert (
        report["logits_text"]["n_positions"] + report["logits_image"]["n_positions"] == logits["n_positions"]
    )
    assert report["greedy"]["exact_match"] == 1.0 and report["greedy"]["first_divergence"] == [16] * 3


def test_validate_without_reference_and_text_only(base: Path, model, tok) -> None:
    report = validate_gguf(model, tok, base, ["There are two squares."], None, n_greedy=4, n_threads=THREADS)
    assert report["logits_image"] is None and report["greedy"]["exact_match"] == 1.0
    with pytest.raises(ExportError, match="no images"):
        validate_gguf(model, tok, base, ["<image> what?"], None, n_greedy=2, n_threads=THREADS)


# ------------------------------------------------------------------------------------------ quantization
K_TYPES = {"q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}


@pytest.fixture(scope="module")
def quant_reports(base: Path, model, tok, prompts, pixels, reference, work: Path) -> dict[str, dict]:
    reports = {}
    for q in ("f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"):
        path = quantize_gguf(base, work / f"lm-{q}.gguf", q, threads=THREADS)
        reports[q] = validate_gguf(
            model, tok, path, prompts, pixels, n_greedy=16, reference=reference, n_threads=THREADS
        )
        reports[q]["tensor_types"] = tensor_types(path)
    return reports


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"])
def test_quantized_files_load_and_are_measured(quant_reports, qtype: str) -> None:
    report = quant_reports[qtype]
    json.dumps(report)
    assert report["quant_type"] == qtype
    assert report["tokenization"]["match"]
    logits = report["logits"]
    assert 0.0 <= logits["top1_agreement"] <= 1.0
    assert np.isfinite(logits["mean_kl"]) and 0.0 <= logits["mean_kl"] < 0.05
    assert len(report["greedy"]["first_divergence"]) == 3
    types = report["tensor_types"]
    for name, ggml_type in types.items():
        if not name.endswith(".weight") or name.endswith("norm.weight"):
            assert ggml_type == "F32", name  # norms and biases are never quantized
    if qtype in K_TYPES:  # hidden 256 and ffn 1024 divide the 256-blocks: real K-quants, no fallback
        assert (
            types["blk.0.ffn_up.weight"] == K_TYPES[qtype] or types["blk.0.attn_qkv.weight"] == K_TYPES[qtype]
        )
        assert not {"Q5_0", "Q5_1", "Q8_0", "F16"} & set(types.values())


def test_more_bits_means_closer_to_pytorch(quant_reports) -> None:
    kl = {q: r["logits"]["mean_kl"] for q, r in quant_reports.items()}
    assert kl["f16"] < kl["q8_0"] < kl["q4_0"]
    assert kl["q6_k"] < kl["q4_k_m"]
    assert quant_reports["f16"]["greedy"]["exact_match"] == 1.0


def test_unknown_quant_type_lists_valid_ones(base: Path, work: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown quantization type 'q9_9'; valid: .*q4_k_m"):
        quantize_gguf(base, work / "x.gguf", "q9_9", threads=THREADS)
    assert not (work / "x.gguf").exists()
    assert "Q4_K_M".lower() in QUANT_TYPES


def test_importance_matrix(base: Path, model, tok, prompts, pixels, work: Path) -> None:
    path = compute_imatrix(model, tok, prompts, work / "imatrix.gguf", images=pixels)
    entries = load_imatrix(path)
    assert set(entries) == {
        f"blk.{b}.{n}.weight" for b in range(4) for n in ("attn_qkv", "attn_output", "ffn_up", "ffn_down")
    } | {"output.weight"}
    assert entries["blk.0.ffn_down.weight"].shape == (1024,)
    assert entries["output.weight"].shape == (256,)
    # the statistic: mean over tokens of the squared input of the matmul
    captured = []
    hook = model.model.layers[0].mlp.fc2.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    with torch.no_grad():
        from export.gguf_validate import torch_forward_inputs

        for kwargs in torch_forward_inputs(model, tok, prompts, pixels):
            model(**kwargs)
    hook.remove()
    x = torch.cat([c.reshape(-1, 1024) for c in captured]).double()
    np.testing.assert_allclose(entries["blk.0.ffn_down.weight"], (x**2).mean(0).numpy(), rtol=1e-4)
    out = quantize_gguf(base, work / "lm-q4_k_m-imatrix.gguf", "Q4_K_M", imatrix=path, threads=THREADS)
    with LlamaSession(out, n_ctx=64, n_threads=THREADS) as s:
        s.eval_tokens(s.tokenize("There are two squares."))
        assert np.isfinite(s.logits()).all()


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "overrides",
    [{"num_key_value_heads": 2}, {"tie_word_embeddings": True}],
    ids=["grouped-query-attention", "tied-embeddings"],
)
def test_supported_variants_match(tok, prompts, pixels, work: Path, overrides) -> None:
    model = tiny_model(tok, seed=1, **overrides)
    path = write_gguf(model, tok, work / "variant.gguf")
    reader = GGUFReader(str(path))
    assert kv(reader, llm_key(Keys.Attention.HEAD_COUNT_KV)) == overrides.get("num_key_value_heads", 4)
    report = validate_gguf(
        model, tok, path, prompts, pixels, n_greedy=8, kv_type="f32", flash_attn=False, n_threads=THREADS
    )
    assert report["logits"]["max_abs_logit_error"] < 2e-3
    assert report["greedy"]["exact_match"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"qk_layernorm": True}, "qk_layernorm"),
        ({"hidden_act": "gelu"}, "tanh GELU"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ],
)
def test_unsupported_configs_raise_before_writing(tok, work: Path, overrides, message) -> None:
    model = tiny_model(tok, **overrides)
    out = work / "unsupported.gguf"
    with pytest.raises(ExportError, match=message):
        write_gguf(model, tok, out)
    assert not out.exists()


def test_non_phi_models_and_missing_output_bias_raise(tok, work: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok)))
    with pytest.raises(ExportError, match="Phi-2 language models only"):
        write_gguf(gpt2, tok, work / "gpt2.gguf")
    model = tiny_model(tok)
    model.lm_head.bias = None
    with pytest.raises(ExportError, match="output.bias"):
        write_gguf(model, tok, work / "nobias.gguf")
    assert not list(work.glob("gpt2.gguf*")) and not list(work.glob("nobias.gguf*"))


# ------------------------------------------------------------------------------------------ session
def test_session_prefix_reuse_chunking_and_embeddings(base: Path, model, tok) -> None:
    prefix = tok(SYSTEM_PROMPT + " USER:", add_special_tokens=False).input_ids
    q1 = tok(" What colour is the circle? ASSISTANT:", add_special_tokens=False).input_ids
    q2 = tok(" How many squares are there? ASSISTANT:", add_special_tokens=False).input_ids
    with LlamaSession(base, n_ctx=256, n_batch=512, n_threads=THREADS) as fresh:
        fresh.eval_tokens(prefix + q2)
        expected = fresh.logits()
        assert fresh.argmax() == int(expected.argmax())
    with LlamaSession(
        base, n_ctx=256, n_batch=7, all_logits=True, n_threads=THREADS
    ) as s:  # several decode calls
        s.eval_tokens(prefix)
        s.eval_tokens(q1)
        assert s.n_past == len(prefix) + len(q1)
        s.truncate(len(prefix))
        s.eval_tokens(q2)
        np.testing.assert_allclose(s.logits(), expected, atol=1e-4)
        assert s.logits_all().shape == (len(q2), s.n_vocab)
        # the token-embedding rows fed as embeddings give the same logits as the token ids
        s.reset()
        emb = model.get_input_embeddings().weight.detach()[prefix + q2].numpy()
        s.eval_embeddings(emb)
        np.testing.assert_allclose(s.logits(), expected, atol=1e-4)
        assert s.n_past == len(prefix) + len(q2)


def test_session_errors(base: Path, work: Path) -> None:
    with LlamaSession(base, n_ctx=32, n_threads=THREADS) as s:
        with pytest.raises(ExportError, match="no logits"):
            s.logits()
        with pytest.raises(ExportError, match="shape"):
            s.eval_embeddings(np.zeros((2, 7), dtype=np.float32))
        with pytest.raises(ExportError, match="context is full"):
            s.eval_tokens([5] * (s.n_ctx + 1))
        with pytest.raises(ExportError, match="all_logits"):
            s.logits_all()
        with pytest.raises(ExportError, match="truncate"):
            s.truncate(5)
    bad = work / "not-a-model.gguf"
    bad.write_text("not a gguf file")
    with pytest.raises(ExportError, match="cannot load"):
        LlamaSession(bad, n_threads=THREADS)


# ------------------------------------------------------------------------------------------ real shapes
@pytest.mark.slow
def test_phi2_shaped_layer_exports_and_quantizes(tok, prompts, work: Path) -> None:
    """One Phi-2-sized block (hidden 2560, 32 heads of 80, rotary 32): real K-quant row sizes."""
    torch.manual_seed(0)
    cfg = build_config("imp-v1-3b", tokenizer=tok, num_hidden_layers=1, vocab_size=1024)
    model = ImpForCausalLM(cfg).eval()
    base = write_gguf(model, tok, work / "phi2-shaped.gguf", dtype="f16")
    assert kv(GGUFReader(str(base)), llm_key(Keys.Rope.DIMENSION_COUNT)) == 32
    text_prompts = [p for p in prompts if "<image>" not in p]
    report = validate_gguf(model, tok, base, text_prompts, None, n_greedy=4, n_threads=THREADS)
    assert report["logits"]["top1_agreement"] > 0.9
    q = quantize_gguf(base, work / "phi2-shaped-q4_k_m.gguf", "q4_k_m", threads=THREADS)
    types = tensor_types(q)
    assert types["blk.0.ffn_up.weight"] == "Q4_K"  # llama.cpp's q4_k_m mix keeps some tensors at Q5_K/Q6_K
    assert set(types.values()) <= {"F32", "Q4_K", "Q5_K", "Q6_K"}
    assert validate_gguf(model, tok, q, text_prompts, None, n_greedy=4, n_threads=THREADS)["tokenization"][
        "match"
    ]


def test_quantized_prompt_batches_decode_with_and_without_extra_buffers(base: Path, work: Path) -> None:
    """A q8_0 prompt of several tokens decodes in one batch. llama.cpp's extra CPU buffers (repacked /
    AMX weights) are skipped on AMX CPUs, where llama-cpp-python 0.3.36 segfaults on such a batch, and
    the plain buffer gives the same logits as whatever the default chose."""
    path = quantize_gguf(base, work / "lm-q8_0-batch.gguf", "q8_0", threads=THREADS)
    ids = list(range(5, 25))
    rows = {}
    for extra in (None, False):
        with LlamaSession(path, n_ctx=64, n_threads=THREADS, all_logits=True, extra_buffers=extra) as s:
            s.eval_tokens(ids)
            rows[extra] = s.logits_all()
    assert rows[None].shape == (len(ids), rows[None].shape[1]) and np.isfinite(rows[None]).all()
    assert np.allclose(rows[None], rows[False], atol=2e-2)
