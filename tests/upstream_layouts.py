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

Layouts (:func:`build_layouts`; configs and tokenizer in :mod:`upstream_configs`): ``imp-v1-3b`` (phi-msft names, fp16, two safetensors shards, ``auto_map``
pointing at code that must never run), ``imp-v1-3b-bin`` (the same as ``pytorch_model.bin``),
``Imp-v1.5-3B-Phi2`` / ``Imp-v1.5-3B-196`` (Phi names, Phi-2's eos 50256 in config.json), ``llava-phi``
(bf16, CLIP tower nested, tokenizer without ``<image>``), and the MILVLG/imp training outputs
``imp-stage1`` (mm_projector.bin), ``imp-lora`` (adapter + non_lora_trainables.bin) and ``imp-fft``
(a full fine-tune whose tower is only named), with the ``phi-2`` and ``siglip`` base folders they need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from upstream_configs import (
    CLIP,
    ENDOFTEXT,
    EOS,
    IMAGE,
    LM,
    SIGLIP,
    VOCAB_SIZE,
    bpe_vocab_and_merges,
    clip_preprocessor_config,
    imp_training_config,
    imp_v1_config,
    imp_v15_config,
    llava_phi_config,
    phi_fields,
    siglip_folder_config,
    write_phi2_tokenizer,
)


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
