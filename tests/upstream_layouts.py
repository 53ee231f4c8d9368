"""Checkpoint folders in the published layouts, written field for field as upstream's code writes them.

These stand in for the real downloads (which tests cannot fetch): the config.json of each layout
as its configuration / training code serialises it (``PretrainedConfig.to_diff_dict`` at the top
level, full ``to_dict()`` for the nested vision configs), weights under upstream's tensor names
written with safetensors / ``torch.save`` (never with this project's writer), and a GPT-2-style
byte-level BPE tokenizer in Phi-2's file format whose special tokens sit at the real ids. Only the
sizes are scaled down: the vocabulary keeps its 51200 rows.

Sources: MILVLG/imp (``imp_llava/model/language_model/imp.py``: ImpConfig; ``train/train.py``: what
training records and saves; ``multimodal_encoder/clip_encoder.py``: the tower treatment),
zhuyiche/llava-phi (``configuration_llava_phi.py``, ``llava_arch.py``, ``clip_encoder.py``,
``train/train.py``), microsoft/phi-2's configs (phi-msft ``configuration_phi.py`` and the later
transformers ``PhiConfig``), google/siglip-so400m-patch14-384's two-tower config.

Layouts (:data:`LAYOUTS`): ``imp-v1-3b`` (phi-msft names, fp16, two safetensors shards, ``auto_map``
pointing at code that must never run), ``imp-v1-3b-bin`` (the same as ``pytorch_model.bin``),
``Imp-v1.5-3B-Phi2`` / ``Imp-v1.5-3B-196`` (Phi names, Phi-2's eos 50256 in config.json), ``llava-phi``
(bf16, CLIP tower nested, tokenizer without ``<image>``), and the MILVLG/imp training outputs
``imp-stage1`` (mm_projector.bin), ``imp-lora`` (adapter + non_lora_trainables.bin) and ``imp-fft``
(a full fine-tune whose tower is only named), with the ``phi-2`` and ``siglip`` base folders they need.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

# ---------------------------------------------------------------------------------- token ids
VOCAB_SIZE = 51200
ENDOFTEXT, EOS, IMAGE = 50256, 50295, 50296  # <|endoftext|>, Imp's </s>, Imp's <image>
#: Phi-2's added whitespace tokens 50257..50294: 31 down to 2 spaces, then 9 down to 2 tabs.
WHITESPACE = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
CORPUS = [
    SYSTEM,
    "USER: <image>\nWhat colour is the shape? ASSISTANT: The shape is red.",
    "USER: How many shapes are there? ASSISTANT: There are two shapes: a blue square and a green circle.",
    "Describe the image concisely. A small yellow triangle on the left of a large purple star.",
    "Write one sentence about the sea. The sea is wide, deep and full of life. What is two plus three? Five.",
]

# ---------------------------------------------------------------------------------- sizes
LM = {"hidden": 64, "layers": 2, "heads": 4, "rotary_dim": 6}  # head 16, rotary 6 (Phi-2: 80 / 32)
SIGLIP = {"hidden": 32, "intermediate": 64, "heads": 2, "layers": 3, "patch": 14}
CLIP = {"hidden": 32, "intermediate": 64, "heads": 2, "layers": 3, "patch": 14, "image": 56}


def bookkeeping(version: str, name_or_path: str = "") -> dict[str, Any]:
    """The generic fields ``PretrainedConfig.to_dict()`` writes (transformers 4.3x), in its order."""
    return {
        "return_dict": True, "output_hidden_states": False, "output_attentions": False, "torchscript": False,
        "torch_dtype": None, "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {},
        "tie_word_embeddings": True, "is_encoder_decoder": False, "is_decoder": False,
        "cross_attention_hidden_size": None, "add_cross_attention": False, "tie_encoder_decoder": False,
        "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
        "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        "typical_p": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "num_return_sequences": 1,
        "chunk_size_feed_forward": 0, "output_scores": False, "return_dict_in_generate": False,
        "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
        "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
        "architectures": None, "finetuning_task": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "tokenizer_class": None, "prefix": None,
        "bos_token_id": None, "pad_token_id": None, "eos_token_id": None, "sep_token_id": None,
        "decoder_start_token_id": None, "task_specific_params": None, "problem_type": None,
        "_name_or_path": name_or_path, "transformers_version": version,
    }  # fmt: skip


def siglip_vision_config(image_size: int) -> dict[str, Any]:
    """``SiglipVisionConfig(...).to_dict()``: Imp's ``vision_tower_config`` (the released tower, all
    its layers: Imp deletes the last one when it builds the model)."""
    return {
        **bookkeeping("4.37.2"),
        "model_type": "siglip_vision_model", "hidden_size": SIGLIP["hidden"],
        "intermediate_size": SIGLIP["intermediate"], "num_hidden_layers": SIGLIP["layers"],
        "num_attention_heads": SIGLIP["heads"], "num_channels": 3, "patch_size": SIGLIP["patch"],
        "image_size": image_size, "attention_dropout": 0.0, "layer_norm_eps": 1e-06,
        "hidden_act": "gelu_pytorch_tanh",
    }  # fmt: skip


def phi_msft_fields() -> dict[str, Any]:
    """The LM fields of a phi-msft config.json (microsoft/phi-2, Dec 2023), scaled down."""
    return {
        "activation_function": "gelu_new", "attn_pdrop": 0.0, "embd_pdrop": 0.0, "flash_attn": False,
        "flash_rotary": False, "fused_dense": False, "img_processor": None, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "n_embd": LM["hidden"], "n_head": LM["heads"], "n_head_kv": None,
        "n_inner": None, "n_layer": LM["layers"], "n_positions": 2048, "resid_pdrop": 0.1,
        "rotary_dim": LM["rotary_dim"], "tie_word_embeddings": False, "vocab_size": VOCAB_SIZE,
    }  # fmt: skip


def phi_fields(version: str = "4.37.0") -> dict[str, Any]:
    """The LM fields transformers' ``PhiConfig`` writes (microsoft/phi-2 since 2024), scaled down."""
    return {
        "attention_dropout": 0.0, "bos_token_id": ENDOFTEXT, "embd_pdrop": 0.0, "eos_token_id": ENDOFTEXT,
        "hidden_act": "gelu_new", "hidden_size": LM["hidden"], "initializer_range": 0.02,
        "intermediate_size": 4 * LM["hidden"], "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "num_attention_heads": LM["heads"], "num_hidden_layers": LM["layers"],
        "num_key_value_heads": LM["heads"], "partial_rotary_factor": LM["rotary_dim"] / (LM["hidden"] // LM["heads"]),
        "qk_layernorm": False, "resid_pdrop": 0.1, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": version,
        "use_cache": True, "vocab_size": VOCAB_SIZE,
    }  # fmt: skip


def imp_aliases() -> dict[str, Any]:
    """What MILVLG/imp's ``ImpConfig.__init__`` adds to a Phi config (phi-msft names for its remote code;
    ``rotary_dim`` is hard-coded to Phi-2's 32, which is why the transformers names must win)."""
    return {
        "activation_function": "gelu_new", "attn_pdrop": 0.0, "layer_norm_epsilon": 1e-05,
        "n_embd": LM["hidden"], "n_head": LM["heads"], "n_layer": LM["layers"], "n_positions": 2048,
        "flash_attn": False, "flash_rotary": False, "fused_dense": False, "n_head_kv": LM["heads"],
        "n_inner": 4 * LM["hidden"], "rotary_dim": 32, "image_token_index": IMAGE, "image_token": "<image>",
    }  # fmt: skip


def imp_training_fields(tower: str, stage: int) -> dict[str, Any]:
    """What MILVLG/imp's train.py records on the model config (``--version phi2``, square images)."""
    return {
        "mm_vision_tower": tower, "use_mm_proj": True, "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": SIGLIP["hidden"], "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "square", "tokenizer_padding_side": "right", "tokenizer_model_max_length": 3072,
        "tune_mm_mlp_adapter": stage == 1, "freeze_mm_mlp_adapter": False, "mm_use_im_start_end": False,
        "mm_projector_lr": None if stage == 1 else 2e-05, "mm_use_im_patch_token": False,
    }  # fmt: skip


AUTO_MAP = {
    "AutoConfig": "configuration_imp.ImpConfig",
    "AutoModelForCausalLM": "modeling_imp.ImpForCausalLM",
}


def imp_v1_config() -> dict[str, Any]:
    """MILVLG/imp-v1-3b's config.json: phi-msft LM fields, Imp's fields, the nested SigLIP config."""
    return {
        "_name_or_path": "MILVLG/imp-v1-3b", "architectures": ["ImpForCausalLM"], "auto_map": AUTO_MAP,
        **phi_msft_fields(), **imp_training_fields("google/siglip-so400m-patch14-384", 2),
        "eos_token_id": EOS, "image_token": "<image>", "image_token_index": IMAGE, "model_type": "imp",
        "pad_token_id": ENDOFTEXT, "torch_dtype": "float16", "transformers_version": "4.31.0",
        "use_cache": True, "vision_tower_config": siglip_vision_config(56),
    }  # fmt: skip


def imp_v15_config(name: str, image_size: int) -> dict[str, Any]:
    """Imp-v1.5-3B-Phi2 / -196: transformers Phi fields derived from microsoft/phi-2 (so eos 50256)."""
    return {
        "_name_or_path": f"MILVLG/{name}", "architectures": ["ImpForCausalLM"], "auto_map": AUTO_MAP,
        **phi_fields("4.38.2"), **imp_aliases(), **imp_training_fields("google/siglip-so400m-patch14-384", 2),
        "model_type": "imp", "vision_tower_config": siglip_vision_config(image_size),
    }  # fmt: skip


def imp_training_config(stage: int) -> dict[str, Any]:
    """A config.json written by MILVLG/imp's train.py from checkpoints/base/phi-2 (no tower config)."""
    return {
        "_name_or_path": "checkpoints/base/phi-2/", "architectures": ["ImpForCausalLM"], **phi_fields(),
        **imp_aliases(), **imp_training_fields("checkpoints/base/siglip-so400m-patch14-384", stage),
        "model_type": "imp",
    }  # fmt: skip


def llava_phi_config() -> dict[str, Any]:
    """LLaVA-Phi's config.json: ``LlavaPhiConfig(PhiConfig)`` with the nested vision_config its
    train.py fills from the CLIP tower (``LlavaPhiVisionConfig(**clip.to_dict()).to_dict()``)."""
    tower = {
        **bookkeeping("4.36.2", "openai/clip-vit-large-patch14-336"),
        "model_type": "llava_phi_clip_vision_model", "hidden_size": CLIP["hidden"],
        "intermediate_size": CLIP["intermediate"], "projection_dim": CLIP["hidden"],
        "num_hidden_layers": CLIP["layers"], "num_attention_heads": CLIP["heads"], "num_channels": 3,
        "patch_size": CLIP["patch"], "image_size": CLIP["image"], "initializer_range": 0.02,
        "initializer_factor": 1.0, "attention_dropout": 0.0, "layer_norm_eps": 1e-05,
        "hidden_act": "quick_gelu", "dropout": 0.0, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
    }  # fmt: skip
    projector = {
        **bookkeeping("4.36.2"), "model_type": "llava_phi_projector", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": CLIP["hidden"], "hidden_size": LM["hidden"],
    }  # fmt: skip
    return {
        "_name_or_path": "./checkpoints/llavaPhi-v0-3b-finetune", "architectures": ["LlavaPhiForCausalLM"],
        **phi_fields("4.36.2"), "freeze_vision_tower": False, "image_aspect_ratio": "pad",
        "mm_projector_lr": None, "mm_use_im_patch_token": False, "mm_use_im_start_end": False,
        "model_type": "llava_phi", "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16", "tune_mm_mlp_adapter": False,
        "vision_config": {"mm_projector": projector, "vision_tower": tower},
    }  # fmt: skip


def clip_preprocessor_config() -> dict[str, Any]:
    """``CLIPImageProcessor.save_pretrained`` of openai/clip-vit-large-patch14-336's processor, scaled."""
    edge = CLIP["image"]
    return {
        "crop_size": {"height": edge, "width": edge}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": edge},
    }  # fmt: skip


def siglip_folder_config() -> dict[str, Any]:
    """google/siglip-so400m-patch14-384's config.json (a two-tower SiglipModel), scaled down."""
    text = {"hidden_size": SIGLIP["hidden"], "intermediate_size": SIGLIP["intermediate"],
            "model_type": "siglip_text_model", "num_attention_heads": SIGLIP["heads"], "num_hidden_layers": 1}  # fmt: skip
    vision = {"hidden_size": SIGLIP["hidden"], "image_size": 56, "intermediate_size": SIGLIP["intermediate"],
              "model_type": "siglip_vision_model", "num_attention_heads": SIGLIP["heads"],
              "num_hidden_layers": SIGLIP["layers"], "patch_size": SIGLIP["patch"]}  # fmt: skip
    return {
        "architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
        "text_config": text, "torch_dtype": "float32", "transformers_version": "4.37.0.dev0",
        "vision_config": vision,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- tokenizer
@functools.cache
def bpe_vocab_and_merges() -> tuple[dict[str, int], list[str], int]:
    """A small byte-level BPE (GPT-2 pre-tokenizer and byte alphabet) trained on :data:`CORPUS`,
    padded with never-produced filler tokens so that ``<|endoftext|>`` sits at 50256 as in Phi-2.
    Returns the vocabulary, the merges and the number of real (trained) tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    trained = len(vocab)
    for i in range(trained, ENDOFTEXT):
        vocab[f"Ġfiller{i}"] = i  # no merge builds these: never produced by encoding
    vocab["<|endoftext|>"] = ENDOFTEXT
    return vocab, merges, trained


def _added(content: str, special: bool) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": not special, "rstrip": False,
            "single_word": False, "special": special}  # fmt: skip


def write_phi2_tokenizer(folder: Path, extra: tuple[str, ...] = (), max_length: int = 2048) -> None:
    """Phi-2's tokenizer files (vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
    tokenizer_config.json; CodeGenTokenizer), plus ``extra`` special tokens after 50294 as Imp's
    training code (``</s>``) and its release (``<image>``) add them."""
    vocab, merges, _ = bpe_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    added = {t: ENDOFTEXT + 1 + i for i, t in enumerate(WHITESPACE)}
    added.update({t: EOS + i for i, t in enumerate(extra)})
    (folder / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False, indent=2))
    decoder = {str(ENDOFTEXT): _added("<|endoftext|>", True)}
    decoder.update({str(i): _added(t, t in extra) for t, i in added.items()})
    eos = "</s>" if "</s>" in extra else "<|endoftext|>"
    special = {"bos_token": "<|endoftext|>", "eos_token": eos, "unk_token": "<|endoftext|>"}
    if extra:  # Imp's train.py: pad = unk
        special["pad_token"] = "<|endoftext|>"
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "add_prefix_space": False, "added_tokens_decoder": decoder, **special,
        "clean_up_tokenization_spaces": True, "model_max_length": max_length,
        "tokenizer_class": "CodeGenTokenizer",
    }  # fmt: skip
    if extra:
        config["padding_side"] = "right"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))


# ---------------------------------------------------------------------------------- weights
class _Init:
    """Seeded weights that keep activations at unit scale and give peaked next-token logits, so that
    greedy answers do not hang on near-ties (random tiny models otherwise have flat logits)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * std

    def linear(
        self, out: int, inp: int, prefix: str, bias: bool = True, gain: float = 1.0
    ) -> dict[str, torch.Tensor]:
        t = {f"{prefix}.weight": self.normal(out, inp, std=gain / inp**0.5)}
        if bias:
            t[f"{prefix}.bias"] = self.normal(out, std=0.1)
        return t

    def norm(self, dim: int, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": 1 + self.normal(dim, std=0.1),
            f"{prefix}.bias": self.normal(dim, std=0.1),
        }


def phi_tensors(init: _Init) -> dict[str, torch.Tensor]:
    """A Phi LM under transformers' names (``PhiForCausalLM``). The LM head favours the real BPE tokens
    (fillers, whitespace runs and ``<image>`` are pushed down; the stop tokens slightly)."""
    h, f = LM["hidden"], 4 * LM["hidden"]
    t = {"model.embed_tokens.weight": init.normal(VOCAB_SIZE, h)}
    for i in range(LM["layers"]):
        p = f"model.layers.{i}"
        t |= init.norm(h, f"{p}.input_layernorm")
        for name in ("q_proj", "k_proj", "v_proj", "dense"):
            t |= init.linear(h, h, f"{p}.self_attn.{name}")
        t |= init.linear(f, h, f"{p}.mlp.fc1") | init.linear(h, f, f"{p}.mlp.fc2", gain=0.5)
    t |= init.norm(h, "model.final_layernorm") | init.linear(VOCAB_SIZE, h, "lm_head", gain=6.0)
    bias = t["lm_head.bias"]
    vocab, _, trained = bpe_vocab_and_merges()
    bias[trained:] = -30.0
    bias[[i for token, i in vocab.items() if i < trained and not _readable(token)]] = -30.0
    bias[[ENDOFTEXT, EOS]] = -2.0
    return t


def _readable(token: str) -> bool:
    """A byte-level token of printable ASCII (``Ġ``: a space); others decode to partial UTF-8."""
    return all(" " <= c <= "~" or c == "Ġ" for c in token)


def to_msft(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same LM under phi-msft names: ``transformer.h.N.mixer.Wqkv`` = [Q; K; V] rows."""
    out = {"transformer.embd.wte.weight": native["model.embed_tokens.weight"]}
    for i in range(LM["layers"]):
        p, q = f"model.layers.{i}", f"transformer.h.{i}"
        for kind in ("weight", "bias"):
            out[f"{q}.ln.{kind}"] = native[f"{p}.input_layernorm.{kind}"]
            out[f"{q}.mixer.Wqkv.{kind}"] = torch.cat(
                [native[f"{p}.self_attn.{n}_proj.{kind}"] for n in "qkv"]
            )
            out[f"{q}.mixer.out_proj.{kind}"] = native[f"{p}.self_attn.dense.{kind}"]
            out[f"{q}.mlp.fc1.{kind}"] = native[f"{p}.mlp.fc1.{kind}"]
            out[f"{q}.mlp.fc2.{kind}"] = native[f"{p}.mlp.fc2.{kind}"]
    for kind in ("weight", "bias"):
        out[f"lm_head.ln.{kind}"] = native[f"model.final_layernorm.{kind}"]
        out[f"lm_head.linear.{kind}"] = native[f"lm_head.{kind}"]
    return out


def _encoder_layers(init: _Init, c: dict[str, int], layers: int) -> dict[str, torch.Tensor]:
    t: dict[str, torch.Tensor] = {}
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}"
        t |= init.norm(c["hidden"], f"{p}.layer_norm1") | init.norm(c["hidden"], f"{p}.layer_norm2")
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            t |= init.linear(c["hidden"], c["hidden"], f"{p}.self_attn.{name}")
        t |= init.linear(c["intermediate"], c["hidden"], f"{p}.mlp.fc1")
        t |= init.linear(c["hidden"], c["intermediate"], f"{p}.mlp.fc2", gain=0.5)
    return t


def siglip_tensors(init: _Init, image_size: int, layers: int, full: bool) -> dict[str, torch.Tensor]:
    """``SiglipVisionModel`` tensors (``vision_model.*``); ``full``: with the post-layernorm and the
    pooling head Imp replaces by identities (as google's checkpoint holds them)."""
    c, n = SIGLIP, (image_size // SIGLIP["patch"]) ** 2
    t = {
        "vision_model.embeddings.patch_embedding.weight": init.normal(
            c["hidden"], 3, c["patch"], c["patch"], std=0.1
        ),
        "vision_model.embeddings.patch_embedding.bias": init.normal(c["hidden"], std=0.1),
        "vision_model.embeddings.position_embedding.weight": init.normal(n, c["hidden"]),
        **_encoder_layers(init, c, layers),
    }
    if full:
        h = c["hidden"]
        t |= init.norm(h, "vision_model.post_layernorm") | init.norm(h, "vision_model.head.layernorm")
        t["vision_model.head.probe"] = init.normal(1, 1, h)
        t["vision_model.head.attention.in_proj_weight"] = init.normal(3 * h, h, std=h**-0.5)
        t["vision_model.head.attention.in_proj_bias"] = init.normal(3 * h, std=0.1)
        t |= init.linear(h, h, "vision_model.head.attention.out_proj")
        t |= init.linear(c["intermediate"], h, "vision_model.head.mlp.fc1")
        t |= init.linear(h, c["intermediate"], "vision_model.head.mlp.fc2")
    return t


def clip_tensors(init: _Init) -> dict[str, torch.Tensor]:
    """``CLIPVisionTransformer`` tensors (``vision_model.*``: class embedding, no patch bias)."""
    c, n = CLIP, (CLIP["image"] // CLIP["patch"]) ** 2 + 1
    return {
        "vision_model.embeddings.class_embedding": init.normal(c["hidden"]),
        "vision_model.embeddings.patch_embedding.weight": init.normal(
            c["hidden"], 3, c["patch"], c["patch"], std=0.1
        ),
        "vision_model.embeddings.position_embedding.weight": init.normal(n, c["hidden"]),
        **init.norm(c["hidden"], "vision_model.pre_layrnorm"),
        **_encoder_layers(init, c, c["layers"]),
        **init.norm(c["hidden"], "vision_model.post_layernorm"),
    }


def projector_tensors(init: _Init, vision_hidden: int, prefix: str) -> dict[str, torch.Tensor]:
    return init.linear(LM["hidden"], vision_hidden, f"{prefix}.0") | init.linear(
        LM["hidden"], LM["hidden"], f"{prefix}.2"
    )


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def save_shards(state: dict[str, torch.Tensor], folder: Path, dtype: torch.dtype, n: int = 2) -> None:
    """``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, as ``save_pretrained``
    of transformers writes sharded checkpoints (the index maps every tensor to its shard)."""
    keys = list(state)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map, total = {}, 0
    for i, name in enumerate(names):
        part = {k: state[k].to(dtype).contiguous() for k in keys[i::n]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


#: Files an upstream folder ships that must never run (auto_map points at them).
REMOTE_CODE = ("configuration_imp.py", "modeling_imp.py", "vision_encoder.py")


def write_remote_code(folder: Path) -> None:
    for name in REMOTE_CODE:
        (folder / name).write_text("raise SystemExit('code shipped in the checkpoint was executed')\n")


class TrainingArguments:
    """Stands in for transformers' TrainingArguments that Trainer pickles into training_args.bin:
    a pickle ``torch.load(weights_only=True)`` refuses, so it proves that file is never read."""

    learning_rate = 2e-5


# ---------------------------------------------------------------------------------- folders
IMP_TOKENS = ("</s>", "<image>")  # the release's tokenizer; the training code adds only </s>


def write_imp_v1(folder: Path, fmt: str = "safetensors") -> None:
    """MILVLG/imp-v1-3b: phi-msft tensor names, the tower under ``transformer.vision_tower.vision_tower``
    holding the 2 of 3 layers Imp keeps (no post-layernorm, no head), fp16."""
    init = _Init(1)
    state = to_msft(phi_tensors(init))
    state |= prefixed(
        siglip_tensors(init, 56, SIGLIP["layers"] - 1, full=False), "transformer.vision_tower.vision_tower."
    )
    state |= projector_tensors(init, SIGLIP["hidden"], "transformer.mm_projector")
    folder.mkdir(parents=True)
    write_json(folder / "config.json", imp_v1_config())
    write_json(folder / "generation_config.json", {"_from_model_config": True, "eos_token_id": EOS, "pad_token_id": ENDOFTEXT, "transformers_version": "4.31.0"})  # fmt: skip
    write_phi2_tokenizer(folder, IMP_TOKENS, 3072)
    write_remote_code(folder)
    if fmt == "bin":
        torch.save({k: v.half() for k, v in state.items()}, folder / "pytorch_model.bin")
    else:
        save_shards(state, folder, torch.float16)


def write_imp_v15(folder: Path, image_size: int) -> None:
    """Imp-v1.5-3B-Phi2 (``image_size`` 384, tiny: 56) or -196 (196): transformers Phi names, the tower
    under ``model.vision_tower.vision_tower``, fp16 shards."""
    init = _Init(2)
    state = phi_tensors(init)
    state |= prefixed(
        siglip_tensors(init, image_size, SIGLIP["layers"] - 1, full=False), "model.vision_tower.vision_tower."
    )
    state |= projector_tensors(init, SIGLIP["hidden"], "model.mm_projector")
    folder.mkdir(parents=True)
    write_json(folder / "config.json", imp_v15_config(folder.name, image_size))
    write_phi2_tokenizer(folder, IMP_TOKENS, 3072)
    write_remote_code(folder)
    save_shards(state, folder, torch.float16)


def write_llava_phi(folder: Path) -> None:
    """LLaVA-Phi: ``model.vision_tower.vision_model.*`` (the whole CLIP tower), ``model.mm_projector``,
    bf16 shards, Phi-2's own tokenizer (no ``<image>``), the CLIP preprocessor config."""
    init = _Init(3)
    state = phi_tensors(init) | prefixed(clip_tensors(init), "model.vision_tower.")
    state |= projector_tensors(init, CLIP["hidden"], "model.mm_projector")
    folder.mkdir(parents=True)
    write_json(folder / "config.json", llava_phi_config())
    write_json(folder / "preprocessor_config.json", clip_preprocessor_config())
    write_phi2_tokenizer(folder)
    save_shards(state, folder, torch.bfloat16)


def write_phi2_base(folder: Path) -> None:
    """microsoft/phi-2 (transformers names): what the training scripts start from."""
    folder.mkdir(parents=True)
    write_json(folder / "config.json", {"_name_or_path": "microsoft/phi-2", "architectures": ["PhiForCausalLM"],
                                        **phi_fields(), "model_type": "phi"})  # fmt: skip
    write_phi2_tokenizer(folder)
    save_shards(phi_tensors(_Init(4)), folder, torch.float16)


def write_siglip_base(folder: Path) -> None:
    """google/siglip-so400m-patch14-384: both towers' config, all 3 vision layers, the head, fp32."""
    init = _Init(5)
    state = siglip_tensors(init, 56, SIGLIP["layers"], full=True)
    state["text_model.embeddings.token_embedding.weight"] = init.normal(16, SIGLIP["hidden"])
    state["logit_scale"], state["logit_bias"] = torch.ones(1), torch.zeros(1)
    folder.mkdir(parents=True)
    write_json(folder / "config.json", siglip_folder_config())
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )


def write_stage1(folder: Path) -> None:
    """``--tune_mm_mlp_adapter`` output: config.json and mm_projector.bin (``model.mm_projector.*``)."""
    folder.mkdir(parents=True)
    write_json(folder / "config.json", imp_training_config(1))
    torch.save(
        projector_tensors(_Init(6), SIGLIP["hidden"], "model.mm_projector"), folder / "mm_projector.bin"
    )
    write_json(folder / "trainer_state.json", {"epoch": 1.0, "global_step": 2180, "log_history": []})


LORA_TARGETS = ["fc1", "q_proj", "v_proj", "dense", "k_proj", "fc2", "lm_head"]  # find_all_linear_names


def write_lora(folder: Path, r: int = 4, alpha: int = 8) -> None:
    """``--lora_enable`` output: peft's adapter files (names without the adapter name), the projector
    in non_lora_trainables.bin under the peft model's parameter names, config.json."""
    init = _Init(7)
    adapters: dict[str, torch.Tensor] = {}
    lm = phi_tensors(_Init(4))  # shapes of the base LM's Linear layers
    for key, weight in lm.items():
        module = key.removesuffix(".weight")
        if weight.ndim == 2 and module.rsplit(".", 1)[-1] in LORA_TARGETS:
            out, inp = weight.shape
            adapters[f"base_model.model.{module}.lora_A.weight"] = init.normal(r, inp, std=inp**-0.5)
            adapters[f"base_model.model.{module}.lora_B.weight"] = init.normal(out, r, std=0.05)
    projector = projector_tensors(init, SIGLIP["hidden"], "base_model.model.model.mm_projector")
    folder.mkdir(parents=True)
    write_json(folder / "config.json", imp_training_config(2))
    write_json(folder / "adapter_config.json", {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "checkpoints/base/phi-2/",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha,
        "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None, "target_modules": LORA_TARGETS,
        "task_type": "CAUSAL_LM", "use_rslora": False,
    })  # fmt: skip
    save_file(
        {k: v.half().contiguous() for k, v in adapters.items()}, str(folder / "adapter_model.safetensors")
    )
    torch.save({k: v.half() for k, v in projector.items()}, folder / "non_lora_trainables.bin")
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n")
    write_json(folder / "trainer_state.json", {"epoch": 2.0, "global_step": 10396, "log_history": []})


def write_fft(folder: Path, with_tower: bool = True) -> None:
    """A full fine-tune saved by Trainer: every tensor (the tower's 2 kept layers included unless
    ``with_tower`` is false), the tokenizer with ``</s>`` added, and Trainer's pickled training_args.bin."""
    init = _Init(8)
    state = phi_tensors(init) | projector_tensors(init, SIGLIP["hidden"], "model.mm_projector")
    if with_tower:
        state |= prefixed(
            siglip_tensors(init, 56, SIGLIP["layers"] - 1, full=False), "model.vision_tower.vision_tower."
        )
    folder.mkdir(parents=True)
    write_json(folder / "config.json", imp_training_config(2))
    write_json(folder / "generation_config.json", {"_from_model_config": True, "bos_token_id": ENDOFTEXT, "eos_token_id": ENDOFTEXT, "transformers_version": "4.37.2"})  # fmt: skip
    write_phi2_tokenizer(folder, ("</s>",), 3072)
    save_file(
        {k: v.half().contiguous() for k, v in state.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    torch.save(TrainingArguments(), folder / "training_args.bin")
    write_json(folder / "trainer_state.json", {"epoch": 2.0, "global_step": 10396, "log_history": []})


@dataclass(frozen=True)
class Fixture:
    """One layout on disk and what impvlm must make of it."""

    name: str
    path: Path
    layout: str  # impvlm.upstream layout name
    template: str
    image_token: int  # IMAGE, or IMAGE_SENTINEL without an <image> token
    options: tuple[str, ...] = ()  # extra `imp` options: base folders the folder only names


def build_layouts(root: Path) -> dict[str, Fixture]:
    """Every layout under ``root`` (a few seconds: the 51200-token tokenizer is written 8 times)."""
    sentinel = -200
    base = {"language_model": root / "phi-2", "vision_tower": root / "siglip-so400m-patch14-384"}
    write_phi2_base(base["language_model"])
    write_siglip_base(base["vision_tower"])
    both = ("--language-model", str(base["language_model"]), "--vision-tower", str(base["vision_tower"]))
    tower = ("--vision-tower", str(base["vision_tower"]))
    out = [
        Fixture("imp-v1-3b", root / "imp-v1-3b", "imp", "phi2", IMAGE),
        Fixture("imp-v1-3b-bin", root / "imp-v1-3b-bin", "imp", "phi2", IMAGE),
        Fixture("Imp-v1.5-3B-Phi2", root / "Imp-v1.5-3B-Phi2", "imp", "phi2", IMAGE),
        Fixture("Imp-v1.5-3B-196", root / "Imp-v1.5-3B-196", "imp", "phi2", IMAGE),
        Fixture("llava-phi", root / "llava-phi", "llava-phi", "phi-2_v0", sentinel),
        Fixture("imp-stage1", root / "imp-stage1", "imp-stage1", "plain", sentinel, both),
        Fixture("imp-lora", root / "imp-lora", "imp-lora", "phi2", sentinel, both),
        Fixture("imp-fft", root / "imp-fft", "imp-train", "phi2", sentinel, tower),
    ]
    write_imp_v1(out[0].path)
    write_imp_v1(out[1].path, fmt="bin")
    write_imp_v15(out[2].path, 56)
    write_imp_v15(out[3].path, 196)
    write_llava_phi(out[4].path)
    write_stage1(out[5].path)
    write_lora(out[6].path)
    write_fft(out[7].path)
    return {f.name: f for f in out}


def write_images(folder: Path) -> list[Path]:
    """Two square test pictures (the native path letterboxes other shapes, Imp squashes them)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (colour, box) in enumerate([((220, 30, 30), (8, 8, 40, 40)), ((30, 60, 220), (20, 4, 60, 36))]):
        image = Image.new("RGB", (64, 64), (240, 240, 240))
        ImageDraw.Draw(image).ellipse(box, fill=colour)
        paths.append(folder / f"picture{i}.png")
        image.save(paths[-1])
    return paths
