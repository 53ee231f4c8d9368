"""The Phi-2 language model of an Imp checkpoint as a llama.cpp GGUF file (architecture ``phi2``).

Only the LM is written (token embeddings, the blocks, the final norm and ``lm_head``); the vision
tower and projector go to ONNX. Tensor names come from gguf-py's own table
(``gguf.get_tensor_name_map(MODEL_ARCH.PHI2, n)``), metadata keys from its writer, and the tokenizer
is stored as llama.cpp's ``gpt2`` byte-level BPE with the ``phi-2`` pre-tokenizer.

Layout choices:

- Q, K and V are fused into one ``blk.N.attn_qkv`` tensor ([Q; K; V] along the output dimension):
  one matmul per layer instead of three, as in the Phi-2 GGUFs users already run.
- ``f16`` stores 2-D weights in half precision and keeps norms and biases in f32 (llama.cpp's
  convention; 1-D tensors are never quantized either).
- The token list is padded to the embedding rows with ``[PAD{i}]`` (type UNUSED); special tokens
  are CONTROL, other added tokens USER_DEFINED (stored as their raw text). bos/eos/unk/pad ids are
  always written (llama.cpp otherwise defaults them to 11 for gpt2 vocabularies) and no BOS is
  added: the eos id is the model's stop token (``</s>`` for Imp).

Tensors are streamed to disk one at a time (header and tensor infos first), so a 2.7B model never
needs a second full copy in memory; the file appears atomically (temp file, then rename).

Example::

    path = write_gguf(model, tokenizer, "bundle/lm-f16.gguf", dtype="f16")
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, TENSOR_NAMES, GGUFType, LlamaFileType, TokenType
from transformers import PhiForCausalLM

from export.errors import ExportError
from export.gguf_file import BASE_DTYPES, TANH_GELUS, GGUFTensor, write_gguf_file

log = logging.getLogger(__name__)

ARCH = MODEL_ARCH.PHI2
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]  # "phi2"
TOKENIZER_MODEL = "gpt2"
TOKENIZER_PRE = "phi-2"
#: Leading parts of ``ImpForCausalLM.state_dict()`` keys that are not the language model.
MULTIMODAL_PREFIXES = ("vision_tower.", "mm_projector.")


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    unk: int
    pad: int


# ---------------------------------------------------------------------------------------------- API
def write_gguf(model: Any, tokenizer: Any, out_path: str | Path, dtype: str = "f32") -> Path:
    """Write the LM of ``model`` (an ``ImpForCausalLM`` / ``PhiForCausalLM``) as a GGUF file.

    Args:
        model: the merged model; only its language-model weights are read.
        tokenizer: its fast (byte-level BPE) tokenizer.
        out_path: the ``.gguf`` file to write (replaced atomically if it exists).
        dtype: ``f32`` or ``f16`` (quantize the result with :func:`export.quantize.quantize_gguf`).

    Raises:
        ExportError: the model is not a Phi LM llama.cpp can run, the tokenizer is not a GPT-2
            style BPE, or ``dtype`` is unknown. Nothing is written then.
    """
    if dtype not in BASE_DTYPES:
        raise ExportError(f"unknown GGUF base dtype {dtype!r}; use one of {', '.join(BASE_DTYPES)}")
    check_exportable(model)
    tensors = lm_tensors(model)
    n_vocab = tensors[0].shape[0]  # token_embd: (vocab, hidden)
    tokens, toktypes, special = vocab_entries(model, tokenizer, n_vocab)
    merges = bpe_merges(tokenizer)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np_dtype, file_type = BASE_DTYPES[dtype]
    writer = gguf.GGUFWriter(path=None, arch=ARCH_NAME)
    _add_model_metadata(writer, model, file_type)
    _add_tokenizer_metadata(writer, tokens, toktypes, special, merges)
    write_gguf_file(writer, tensors, np_dtype, out)
    log.info("wrote %s (%s, %d tensors, %d tokens)", out, dtype, len(tensors), len(tokens))
    return out


def check_exportable(model: Any) -> None:
    """Raise :class:`ExportError` unless llama.cpp's ``phi2`` graph computes exactly this LM."""
    if not isinstance(model, PhiForCausalLM):
        raise ExportError(f"GGUF export supports Phi-2 language models only, got {type(model).__name__}")
    cfg = model.config
    if int(cfg.num_hidden_layers) < 1:
        raise ExportError("the LM has no layers")
    heads, kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads or cfg.num_attention_heads)
    if cfg.hidden_size % heads:
        raise ExportError(f"hidden_size {cfg.hidden_size} is not a multiple of the {heads} attention heads")
    if heads % kv_heads:
        raise ExportError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if getattr(cfg, "qk_layernorm", False):
        raise ExportError("qk_layernorm=True is not supported: llama.cpp's phi2 graph has no Q/K norms")
    if cfg.hidden_act not in TANH_GELUS:
        raise ExportError(
            f"hidden_act {cfg.hidden_act!r} is not supported: llama.cpp's phi2 graph uses the tanh GELU "
            f"({', '.join(TANH_GELUS)})"
        )
    scaling = getattr(cfg, "rope_scaling", None)
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ExportError(f"rope_scaling {scaling} is not supported by the GGUF export")
    if _rope_dims(cfg) % 2:
        raise ExportError(f"the rotary dimension {_rope_dims(cfg)} is odd: llama.cpp needs an even one")
    if model.lm_head.bias is None:
        raise ExportError("lm_head has no bias: llama.cpp's phi2 graph requires output.bias")


def lm_tensors(model: Any) -> list[GGUFTensor]:
    """The GGUF tensors of the LM, in file order, with Q/K/V fused per block."""
    n_blocks = int(model.config.num_hidden_layers)
    name_map = gguf.get_tensor_name_map(ARCH, n_blocks)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(MULTIMODAL_PREFIXES)}
    named: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"LM tensor {key!r} has no phi2 GGUF name: unsupported model layout")
        if name in named:
            raise ExportError(f"two LM tensors map to the GGUF tensor {name!r}")
        named[name] = value
    out: list[GGUFTensor] = []

    def take(name: str) -> None:
        if name not in named:
            raise ExportError(f"the model has no tensor for GGUF {name!r}")
        value = named.pop(name)
        out.append(GGUFTensor(name, tuple(value.shape), lambda v=value: v))

    take(_tensor_name(MODEL_TENSOR.TOKEN_EMBD, ".weight"))
    for bid in range(n_blocks):
        for suffix in (".weight", ".bias"):
            take(_tensor_name(MODEL_TENSOR.ATTN_NORM, suffix, bid))
        for suffix in (".weight", ".bias"):
            parts = [
                _tensor_name(t, suffix, bid)
                for t in (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V)
            ]
            missing = [p for p in parts if p not in named]
            if missing:
                raise ExportError(
                    f"the model has no tensor for GGUF {missing[0]!r} (attention without bias?)"
                )
            values = [named.pop(p) for p in parts]
            shape = (sum(v.shape[0] for v in values), *values[0].shape[1:])
            out.append(
                GGUFTensor(
                    _tensor_name(MODEL_TENSOR.ATTN_QKV, suffix, bid), shape, lambda vs=values: torch.cat(vs)
                )
            )
        for tensor in (MODEL_TENSOR.ATTN_OUT, MODEL_TENSOR.FFN_UP, MODEL_TENSOR.FFN_DOWN):
            for suffix in (".weight", ".bias"):
                take(_tensor_name(tensor, suffix, bid))
    for tensor in (MODEL_TENSOR.OUTPUT_NORM, MODEL_TENSOR.OUTPUT):
        for suffix in (".weight", ".bias"):
            take(_tensor_name(tensor, suffix))
    if named:
        raise ExportError(f"LM tensors llama.cpp's phi2 graph does not use: {', '.join(sorted(named))}")
    return out


def vocab_entries(model: Any, tokenizer: Any, n_vocab: int) -> tuple[list[str], list[int], SpecialIds]:
    """Token strings and types for ids ``0..n_vocab-1`` and the special ids to record."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    if len(vocab) > n_vocab or max(vocab.values()) >= n_vocab:
        raise ExportError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model embeds only {n_vocab} tokens"
        )
    special = special_ids(model, tokenizer)
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    control_ids = {special.bos, special.eos, special.unk, special.pad, *tokenizer.all_special_ids}
    image_id = getattr(model.config, "image_token_index", None)
    if image_id is not None:
        control_ids.add(int(image_id))
    by_id = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)  # raw text: llama.cpp expects added tokens pre-normalized
            types.append(
                TokenType.CONTROL if added[i].special or i in control_ids else TokenType.USER_DEFINED
            )
        else:
            tokens.append(by_id[i])
            types.append(TokenType.CONTROL if i in control_ids else TokenType.NORMAL)
    return tokens, types, special


def special_ids(model: Any, tokenizer: Any) -> SpecialIds:
    """eos = the model's stop token; pad from the config or tokenizer; bos/unk fall back to pad."""
    cfg = model.config
    eos = _first_id(getattr(cfg, "eos_token_id", None), tokenizer.eos_token_id)
    pad = _first_id(getattr(cfg, "pad_token_id", None), tokenizer.pad_token_id, eos)
    bos = _first_id(tokenizer.bos_token_id, getattr(cfg, "bos_token_id", None), pad)
    unk = _first_id(tokenizer.unk_token_id, bos)
    if eos is None or pad is None or bos is None or unk is None:
        raise ExportError("neither the model config nor the tokenizer names an eos token")
    return SpecialIds(bos=bos, eos=eos, unk=unk, pad=pad)


def bpe_merges(tokenizer: Any) -> list[str]:
    """The BPE merges (``"a b"`` strings) via ``gguf.SpecialVocab`` on a saved copy of the tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"GGUF export needs a fast (Rust) tokenizer, got {type(tokenizer).__name__}")
    model_type = json.loads(backend.to_str())["model"]["type"]
    if model_type != "BPE":
        raise ExportError(f"GGUF export supports GPT-2 style byte-level BPE tokenizers, got {model_type}")
    with tempfile.TemporaryDirectory(prefix="impvlm-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        merges = gguf.SpecialVocab(tmp, load_merges=True).merges
    if not merges:
        raise ExportError("the tokenizer has no BPE merges")
    return list(merges)


# ------------------------------------------------------------------------------------------ helpers
def _tensor_name(tensor: MODEL_TENSOR, suffix: str = "", bid: int | None = None) -> str:
    base = TENSOR_NAMES[tensor]
    return (base.format(bid=bid) if bid is not None else base) + suffix


def _rope_dims(cfg: Any) -> int:
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return int(cfg.partial_rotary_factor * head_dim)


def _first_id(*candidates: Any) -> int | None:
    for c in candidates:
        if isinstance(c, (list, tuple)):
            c = c[0] if c else None
        if c is not None:
            return int(c)
    return None


def _add_model_metadata(writer: gguf.GGUFWriter, model: Any, file_type: LlamaFileType) -> None:
    cfg = model.config
    heads = int(cfg.num_attention_heads)
    writer.add_type(GGUFType.MODEL)
    writer.add_name(str(getattr(cfg, "model_id", None) or Path(cfg.name_or_path or "phi2").name))
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_block_count(int(cfg.num_hidden_layers))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(cfg.num_key_value_heads or heads))
    writer.add_layer_norm_eps(float(cfg.layer_norm_eps))
    writer.add_rope_dimension_count(_rope_dims(cfg))
    writer.add_rope_freq_base(float(getattr(cfg, "rope_theta", 10000.0)))
    writer.add_file_type(int(file_type))


def _add_tokenizer_metadata(
    writer: gguf.GGUFWriter, tokens: list[str], toktypes: list[int], special: SpecialIds, merges: list[str]
) -> None:
    writer.add_tokenizer_model(TOKENIZER_MODEL)
    writer.add_tokenizer_pre(TOKENIZER_PRE)
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special.bos)
    writer.add_eos_token_id(special.eos)
    writer.add_unk_token_id(special.unk)
    writer.add_pad_token_id(special.pad)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def iter_lm_linear_inputs(model: Any) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(GGUF weight name, module whose input feeds that weight)`` for every matmul of the LM.

    Q, K and V share their input, so the fused ``attn_qkv`` is represented by ``q_proj``. Used by
    :func:`export.quantize.compute_imatrix`.
    """
    n_blocks = int(model.config.num_hidden_layers)
    name_map = gguf.get_tensor_name_map(ARCH, n_blocks)
    fused = {
        _tensor_name(t, "", bid): _tensor_name(MODEL_TENSOR.ATTN_QKV, "", bid)
        for bid in range(n_blocks)
        for t in (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V)
    }
    seen: set[str] = set()
    for key, module in model.named_modules():
        if key.startswith(MULTIMODAL_PREFIXES) or not isinstance(module, torch.nn.Linear):
            continue
        name = name_map.get_name(key)
        if name is None:
            continue
        name = fused.get(name, name)
        if name not in seen:
            seen.add(name)
            yield name + ".weight", module
