"""config.json files and the tokenizer of the published layouts, as upstream's code writes them.

The top-level configs are what ``PretrainedConfig.to_diff_dict`` writes, the nested vision configs
full ``to_dict()`` output; sizes are scaled down (:data:`LM`, :data:`SIGLIP`, :data:`CLIP`) but the
vocabulary keeps Phi-2's 51200 rows and its special ids. See :mod:`upstream_layouts` for the sources
and the folders that use them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

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
