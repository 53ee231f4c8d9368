"""The vision tower + projector of an Imp / LLaVA-Phi checkpoint as a llama.cpp ``mmproj`` GGUF.

Stock llama.cpp tools (``llama-mtmd-cli``, ``llama-server``) run a LLaVA-1.5-style model from two
files: the LM GGUF (:mod:`export.gguf_lm`) and an *mmproj* file holding the vision encoder and the
projector, read by llama.cpp's multimodal library (libmtmd, ``tools/mtmd/clip.cpp``). This module
writes that file, quantizes it, reads it back through libmtmd (:class:`export.llama.MtmdEncoder`) and measures it
against PyTorch (:func:`validate_mmproj`). The tools also need the model's chat template, which the LM
GGUF does not carry: :func:`llama_cpp_chat_template` (the bundle's ``gguf/chat-template.jinja``).

What the file says (architecture ``clip``, projector type ``mlp``, the LLaVA graph of clip.cpp):

- SigLIP (Imp): the layers the tower holds (Imp keeps 26 of 27) and an explicit
  ``clip.vision.feature_layer``. clip.cpp runs layers up to ``max(feature_layer)``, or
  ``block_count - 1`` when the key is absent: without it the last layer is silently skipped.
- CLIP (LLaVA-Phi, ``hidden_states[-2]``): class embedding, pre-layernorm and only the layers up to
  the feature layer (the unused last one is not written). Feature index ``k`` is
  ``hidden_states[k]`` (0 = the embeddings after the pre-layernorm), i.e. ``L + 1 + select_layer``.
- No ``v.post_ln``: Imp / LLaVA features are taken before the post-layernorm, and the graph applies
  it whenever the tensor is present.
- ``clip.use_gelu`` is set from the tower's activation: true for the tanh GELU (SigLIP), false for
  quick-GELU (CLIP). The projector's GELU is always ggml's tanh approximation, while Imp's
  ``mlp2x_gelu`` uses the exact (erf) GELU: a small, measured drift.
- Preprocessing is llama.cpp's own: for this projector it letterboxes (fit, then pad with the colour
  (122, 116, 104)) with its own bicubic resize, while Imp v1 squashes the image to a square.
  :func:`validate_mmproj` measures both on the same pixels (file and graph) and end to end
  (preprocessing included), at the feature level and on greedy answers.

Example::

    write_mmproj(model, "bundle/gguf/mmproj-f16.gguf", dtype="f16")
    with LlamaSession("bundle/gguf/model-f16.gguf") as lm, MtmdEncoder("bundle/gguf/mmproj-f16.gguf", lm) as enc:
        features = enc.encode(np.asarray(Image.open("cat.png").convert("RGB")))  # (N, D_lm)
"""

from __future__ import annotations

import collections
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGUFType, LlamaFileType

from export.errors import ExportError
from export.gguf_file import BASE_DTYPES, GGUFTensor, write_gguf_file
from export.quant_types import QUANT_TYPES, mmproj_gate

log = logging.getLogger(__name__)

ARCH_NAME = "clip"
PROJECTOR_TYPE = gguf.VISION_PROJECTOR_TYPE_NAMES[gguf.VISION_PROJECTOR_TYPE.MLP]  # "mlp"
#: The Imp projector llama.cpp's ``mlp`` graph computes: Linear, GELU, Linear (``mm.0`` / ``mm.2``).
SUPPORTED_PROJECTORS = ("mlp2x_gelu",)
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")
#: Tower activation (transformers name) -> ``clip.use_gelu`` (false = quick-GELU).
USE_GELU = {**dict.fromkeys(TANH_GELUS, True), "gelu": True, "quick_gelu": False}
#: llama.cpp's letterbox colour for the ``mlp`` projector (clip.cpp ``image_pad_color``).
LLAMA_CPP_PAD_COLOUR = (122, 116, 104)


class ClipKeys:
    """mmproj keys gguf-py 0.19 has no constant for (the rest come from ``gguf.Keys``)."""

    FEATURE_LAYER = "clip.vision.feature_layer"


# ------------------------------------------------------------------------------------ tensor table
#: transformers vision-tower module (under ``vision_model.``) -> GGUF tensor, outside the blocks.
EMBEDDING_TENSORS: dict[str, MODEL_TENSOR] = {
    "embeddings.patch_embedding": MODEL_TENSOR.V_ENC_EMBD_PATCH,  # SigLIP: weight + bias; CLIP: weight
    "embeddings.position_embedding": MODEL_TENSOR.V_ENC_EMBD_POS,  # both
    "embeddings.class_embedding": MODEL_TENSOR.V_ENC_EMBD_CLS,  # CLIP only (a bare parameter)
    "pre_layrnorm": MODEL_TENSOR.V_PRE_NORM,  # CLIP only
    # "post_layernorm" is deliberately absent: the features are taken before it.
}
#: ``encoder.layers.N.<module>`` -> GGUF tensor; the same names in SiglipVisionModel and CLIPVisionModel.
BLOCK_TENSORS: dict[str, MODEL_TENSOR] = {
    "layer_norm1": MODEL_TENSOR.V_ENC_INPUT_NORM,  # v.blk.N.ln1
    "self_attn.q_proj": MODEL_TENSOR.V_ENC_ATTN_Q,
    "self_attn.k_proj": MODEL_TENSOR.V_ENC_ATTN_K,
    "self_attn.v_proj": MODEL_TENSOR.V_ENC_ATTN_V,
    "self_attn.out_proj": MODEL_TENSOR.V_ENC_ATTN_O,  # v.blk.N.attn_out
    "layer_norm2": MODEL_TENSOR.V_ENC_POST_ATTN_NORM,  # v.blk.N.ln2
    "mlp.fc1": MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": MODEL_TENSOR.V_ENC_FFN_DOWN,
}
#: ``mm_projector.<index>`` of ``mlp2x_gelu`` -> GGUF name. Named directly: gguf's generic name map
#: gives LLaVA's projector another index.
PROJECTOR_TENSORS: dict[str, str] = {"0": "mm.0", "2": "mm.2"}


@dataclass(frozen=True)
class MmprojFacts:
    """What the file says about the tower, derived from an :class:`~impvlm.config.ImpConfig`."""

    tower: str  # transformers model_type
    block_count: int  # layers written (those up to the feature layer)
    feature_layer: int  # hidden_states index the projector reads (0 = embeddings)
    use_gelu: bool
    has_class_embedding: bool
    image_size: int
    patch_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    embedding_length: int
    feed_forward_length: int
    head_count: int
    layer_norm_eps: float
    projection_dim: int
    image_tokens: int


def mmproj_facts(config: Any) -> MmprojFacts:
    """The mmproj metadata of a model, or :class:`ExportError` when llama.cpp cannot run it exactly.

    Refused: projectors other than ``mlp2x_gelu`` (llama.cpp's ``mlp`` graph is Linear-GELU-Linear),
    ``cls_patch`` features (the graph drops the class token) and tower activations clip.cpp lacks.
    """
    vc = config.vision_config
    if config.mm_projector_type not in SUPPORTED_PROJECTORS:
        raise ExportError(
            f"mmproj export supports the {'/'.join(SUPPORTED_PROJECTORS)} projector only, "
            f"not {config.mm_projector_type!r} (llama.cpp's mlp graph is Linear-GELU-Linear)"
        )
    has_cls = bool(config.has_cls_token)
    if has_cls and config.mm_vision_select_feature != "patch":
        raise ExportError(
            "mmproj export needs mm_vision_select_feature='patch' (llama.cpp drops the CLS token)"
        )
    act = str(vc.hidden_act)
    if act not in USE_GELU:
        raise ExportError(
            f"llama.cpp's clip graph has no {act!r} activation; supported: {', '.join(USE_GELU)}"
        )
    if act == "gelu":
        log.warning("the vision tower uses exact GELU; llama.cpp computes the tanh form (small drift)")
    layers = int(vc.num_hidden_layers)
    feature = layers + 1 + int(config.mm_vision_select_layer)  # hidden_states index, 1..layers
    return MmprojFacts(
        tower=str(vc.model_type),
        block_count=feature,
        feature_layer=feature,
        use_gelu=USE_GELU[act],
        has_class_embedding=has_cls,
        image_size=int(vc.image_size),
        patch_size=int(vc.patch_size),
        image_mean=tuple(float(x) for x in config.image_mean),  # type: ignore[arg-type]
        image_std=tuple(float(x) for x in config.image_std),  # type: ignore[arg-type]
        embedding_length=int(vc.hidden_size),
        feed_forward_length=int(vc.intermediate_size),
        head_count=int(vc.num_attention_heads),
        layer_norm_eps=float(vc.layer_norm_eps),
        projection_dim=int(config.hidden_size),
        image_tokens=int(config.num_image_tokens),
    )


def mmproj_tensors(model: Any) -> list[GGUFTensor]:
    """The tensors of the mmproj file, in file order, read lazily from ``model``'s modules."""
    facts = mmproj_facts(model.config)
    vision = model.vision_tower.model.vision_model
    params = dict(vision.named_parameters())
    out: list[GGUFTensor] = []

    def add(name: str, key: str) -> None:
        if key not in params:
            raise ExportError(f"the vision tower has no parameter {key!r} (needed for {name})")
        p = params[key]
        out.append(GGUFTensor(name, tuple(p.shape), lambda p=p: p))

    for module, tensor in EMBEDDING_TENSORS.items():
        base = TENSOR_NAMES[tensor]
        if module == "embeddings.class_embedding":
            if facts.has_class_embedding:
                add(base, module)
            continue
        for suffix in ("weight", "bias"):
            key = f"{module}.{suffix}"
            if key in params:
                add(f"{base}.{suffix}", key)
    for bid in range(facts.block_count):
        for module, tensor in BLOCK_TENSORS.items():
            base = TENSOR_NAMES[tensor].format(bid=bid)
            for suffix in ("weight", "bias"):
                add(f"{base}.{suffix}", f"encoder.layers.{bid}.{module}.{suffix}")
    projector = dict(model.mm_projector.named_parameters())
    for index, name in PROJECTOR_TENSORS.items():
        for suffix in ("weight", "bias"):
            p = projector[f"{index}.{suffix}"]
            out.append(GGUFTensor(f"{name}.{suffix}", tuple(p.shape), lambda p=p: p))
    return out


# ---------------------------------------------------------------------------------------------- write
def write_mmproj(model: Any, out_path: str | Path, dtype: str = "f16") -> Path:
    """Write the vision tower and projector of ``model`` (an ``ImpForCausalLM``) as an mmproj GGUF.

    ``dtype``: ``f32`` or ``f16`` (2-D+ weights; biases, norms and the class embedding stay f32).
    Quantize the result with :func:`quantize_mmproj`. The file appears atomically.
    """
    if dtype not in BASE_DTYPES:
        raise ExportError(f"unknown mmproj base dtype {dtype!r}; use one of {', '.join(BASE_DTYPES)}")
    facts = mmproj_facts(model.config)
    tensors = mmproj_tensors(model)
    np_dtype, file_type = BASE_DTYPES[dtype]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path=None, arch=ARCH_NAME)
    _add_metadata(writer, model.config, facts, file_type)
    write_gguf_file(writer, tensors, np_dtype, out)
    layers = f"{facts.block_count} layers, feature layer {facts.feature_layer}"
    log.info("wrote %s (%s, %d tensors, %s)", out, dtype, len(tensors), layers)
    return out


def _add_metadata(writer: gguf.GGUFWriter, config: Any, facts: MmprojFacts, file_type: LlamaFileType) -> None:
    writer.add_type(GGUFType.MMPROJ)
    writer.add_name(f"{getattr(config, 'model_id', 'impvlm')} mmproj")
    writer.add_description(
        f"{facts.tower} tower ({facts.block_count} layers, features of hidden_states[{facts.feature_layer}], "
        f"no post-layernorm) + {config.mm_projector_type} projector, exported by impvlm"
    )
    writer.add_file_type(int(file_type))
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(PROJECTOR_TYPE)
    writer.add_vision_use_gelu(facts.use_gelu)
    writer.add_vision_embedding_length(facts.embedding_length)
    writer.add_vision_feed_forward_length(facts.feed_forward_length)
    writer.add_vision_block_count(facts.block_count)
    writer.add_vision_head_count(facts.head_count)
    writer.add_vision_attention_layernorm_eps(facts.layer_norm_eps)
    writer.add_vision_projection_dim(facts.projection_dim)
    writer.add_vision_image_size(facts.image_size)
    writer.add_vision_patch_size(facts.patch_size)
    writer.add_vision_image_mean(list(facts.image_mean))
    writer.add_vision_image_std(list(facts.image_std))
    writer.add_array(ClipKeys.FEATURE_LAYER, [facts.feature_layer])


def quantize_mmproj(src: str | Path, dst: str | Path, qtype: str, threads: int | None = None) -> Path:
    """Quantize an f32/f16 mmproj with llama.cpp's quantizer (per-tensor fallbacks as for the LM:
    rows that a block size does not divide, e.g. SigLIP's 1152 / 4304 for K-quants, fall back)."""
    from export.quantize import quantize_gguf

    return quantize_gguf(src, dst, qtype, threads=threads)


def mmproj_filename(precision: str) -> str:
    return f"mmproj-{precision}.gguf"


#: libmtmd's default media marker: where ``llama-mtmd-cli`` puts an image's embeddings in a prompt.
LLAMA_CPP_MEDIA_MARKER = "<__media__>"
#: How every llama.cpp media marker starts and ends: ``llama-server`` uses a random one per process
#: (``<__media_X7f...__>``, or ``$LLAMA_MEDIA_MARKER``), ``llama-mtmd-cli`` :data:`LLAMA_CPP_MEDIA_MARKER`.
LLAMA_CPP_MARKER_HEAD, LLAMA_CPP_MARKER_TAIL = "<__media", "__>"
#: The bundle's copy of :func:`llama_cpp_chat_template`, next to the GGUF files.
CHAT_TEMPLATE_FILE = "chat-template.jinja"


def _jinja_str(text: str) -> str:
    """``text`` as a Jinja string literal (escapes both Jinja2 and llama.cpp's lexer read)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return f"'{escaped}'"


def llama_cpp_chat_template(template: Any) -> str:
    """A Jinja chat template for stock llama.cpp (``llama-server --chat-template-file``,
    ``llama-mtmd-cli --chat-template "$(cat FILE)"``) rendering exactly what
    :meth:`impvlm.templates.Template.prompt` renders, with a media marker for ``<image>``.

    In a user message the template moves every media marker to the front, each followed by a
    newline, and strips the rest (LLaVA's rule, :func:`impvlm.templates.move_image_to_front`), so
    ``<__media__>What...`` (how ``llama-mtmd-cli`` prepends a missing marker and how
    ``llama-server`` joins an image part and a text part) becomes the trained ``<image>\\nWhat...``.
    System messages are read (so llama.cpp does not fold them into the user turn) and dropped: the
    system prompt is the template's own, as in training. Every tag trims whitespace and all text is
    in expressions, so the output is the same with or without ``trim_blocks`` / ``lstrip_blocks``;
    no trailing newline (it would end the prompt).

    ``template``: a :class:`~impvlm.templates.Template` or its name (``phi2``, ``phi-2_v0``).
    """
    from impvlm.templates import get_template

    t = get_template(template) if isinstance(template, str) else template
    if t.style != "two":
        raise ExportError(f"template {t.name!r} ({t.style} style) is not a chat template")
    user, assistant = t.roles
    head, tail = _jinja_str(LLAMA_CPP_MARKER_HEAD), _jinja_str(LLAMA_CPP_MARKER_TAIL)
    lines = [
        f"{{{{- {_jinja_str(t.system + t.sep)} -}}}}",
        "{%- for message in messages -%}",
        "{%- set content = message['content'] -%}",
        "{%- if message['role'] == 'user' -%}",
        f"{{%- if {head} in content -%}}",
        "{%- set ns = namespace(media='', text='') -%}",
        f"{{%- for piece in content.split({head}) -%}}",
        "{%- if loop.first -%}{%- set ns.text = piece -%}{%- else -%}",
        f"{{%- set parts = piece.split({tail}, 1) -%}}",
        f"{{%- set ns.media = ns.media + {head} + parts[0] + {tail} + '\\n' -%}}",
        "{%- set ns.text = ns.text + parts[1] -%}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- set content = ns.media + ns.text.strip() -%}",
        "{%- endif -%}",
        f"{{{{- {_jinja_str(user + ': ')} + content + {_jinja_str(t.sep)} -}}}}",
        "{%- elif message['role'] == 'assistant' -%}",
        f"{{{{- {_jinja_str(assistant + ': ')} + content + {_jinja_str(t.sep2)} -}}}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        f"{{%- if add_generation_prompt -%}}{{{{- {_jinja_str(assistant + ':')} -}}}}{{%- endif -%}}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ validation
#: The upstream defect a CLIP tower runs into (the llava graph appends the class token after the
#: patches while its inputs assume it first): the file is right, the library computes something else.
CLS_ORDER_BUG = "ggml-org/llama.cpp#25814"
N_GREEDY = 16
VALIDATION_IMAGES_DESCRIPTION = (
    "synthetic scenes (impvlm.data.synthetic, seed 1) rendered at 2x the input size: square, "
    "cropped to 4:3 landscape, 3:4 portrait and 2:1 wide, plus a uniform-noise square"
)


def validation_images(config: Any, seed: int = 1) -> list[Any]:
    """Raw RGB images of several aspect ratios, where letterbox and squash differ (PIL images)."""
    from PIL import Image

    from impvlm.data.synthetic import Renderer, WorldConfig, sample_scene

    rng = np.random.default_rng(seed)
    world = WorldConfig(seed=seed)
    side = 2 * max(int(config.image_size), 64)
    renderer = Renderer(world, size=side)
    scenes = [renderer(sample_scene(rng, world)) for _ in range(4)]
    images = [
        scenes[0],
        scenes[1].crop((0, 0, side, side * 3 // 4)),
        scenes[2].crop((0, 0, side * 3 // 4, side)),
        scenes[3].crop((0, side // 4, side, side * 3 // 4)),
        Image.fromarray(rng.integers(0, 256, size=(side // 2, side // 2, 3), dtype=np.uint8)),
    ]
    return images


def feature_stats(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-token cosine (min / mean), max |error| and the reference's scale of ``(..., N, D)`` arrays."""
    from export.onnx_vision import token_cosines

    cos = token_cosines(got, ref)
    return {
        "min_cos": float(cos.min()),
        "mean_cos": float(cos.mean()),
        "max_abs_err": float(np.abs(got.astype(np.float64) - ref).max()),
        "ref_max_abs": float(np.abs(ref).max()),
    }


def _torch_features(model: Any, pixels: np.ndarray) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return model.encode_images(torch.from_numpy(pixels).to(device)).float().cpu().numpy()


def _cls_last_features(model: Any, pixels: np.ndarray) -> np.ndarray:
    """What the buggy llava graph computes for a CLIP tower: class token appended after the patches
    with positions in sequence order, output rows 1..N (:data:`CLS_ORDER_BUG`)."""
    import torch

    layers = mmproj_facts(model.config).block_count
    emb = model.vision_tower.model.vision_model.embeddings
    vision = model.vision_tower.model.vision_model
    with torch.no_grad():
        x = torch.from_numpy(pixels).to(emb.patch_embedding.weight.device, emb.patch_embedding.weight.dtype)
        patches = emb.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, N, C)
        cls = emb.class_embedding.expand(patches.shape[0], 1, -1)  # (B, 1, C)
        hidden = vision.pre_layrnorm(torch.cat([patches, cls], 1) + emb.position_embedding.weight[None])
        for layer in vision.encoder.layers[:layers]:
            out = layer(hidden, None, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return model.mm_projector(hidden[:, 1:]).float().cpu().numpy()


def _greedy_agreement(ref: list[list[int]], got: list[list[int]], n: int) -> dict[str, Any]:
    first = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), n) for r, g in zip(ref, got)]
    return {
        "exact_match": float(np.mean([d == n for d in first])),
        "prefix_agreement": float(np.mean(first) / n),
        "first_divergence": first,
    }


def _answer_run(session: Any, reference: Any, features: list[np.ndarray], image_token: int, n: int) -> dict:
    """Greedy tokens and next-token agreement of the LM in llama.cpp fed ``features`` per probe."""
    from export.gguf_validate import llama_run, logit_metrics

    tokens, per_pos = [], []
    for probe, feats, ref_logits in zip(reference.probes, features, reference.logits):
        logits, greedy = llama_run(session, probe, feats, image_token, n)
        tokens.append(greedy)
        per_pos.append(logit_metrics(ref_logits, logits))
    cat = {k: np.concatenate([p[k] for p in per_pos]) for k in per_pos[0]}
    return {
        **_greedy_agreement(reference.greedy, tokens, n),
        "top1_agreement": float(cat["top1"].mean()),
        "mean_kl": float(cat["kl"].mean()),
    }


def validate_mmproj(
    model: Any,
    tokenizer: Any,
    mmproj_path: str | Path,
    lm_path: str | Path,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    n_greedy: int = N_GREEDY,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure an mmproj file run by libmtmd against the PyTorch model, two ways.

    - ``same_pixels``: llama.cpp gets the image already preprocessed the Imp way (squash or pad,
      PIL bicubic, at the input size), so only the file and llama.cpp's graph differ;
    - ``llama_cpp_preprocessing``: llama.cpp gets the raw image and preprocesses it itself
      (letterbox, its own bicubic), which is what stock llama.cpp users run.

    Each is measured on image features (per-token cosine, max abs error) and on greedy answers to
    ``prompts`` (each ``<image>`` takes the next image, cycled) with the LM GGUF ``lm_path``:
    exact match and prefix agreement of ``n_greedy`` tokens against PyTorch, top-1 agreement and KL
    of the next-token distributions. ``lm_only`` feeds PyTorch's own features to the same LM, the
    baseline that isolates the LM file's share of the drift. The verdict applies
    :func:`mmproj_gate` to ``same_pixels`` features; everything else is recorded, not gated
    (letterbox vs squash is a property of llama.cpp, not of the file).
    """
    from export.gguf_validate import torch_reference
    from export.llama import LlamaSession, MtmdEncoder
    from export.quantize import quant_type_name, tensor_types
    from impvlm.image_processing import ImageProcessor, load_image
    from impvlm.templates import IMAGE_TOKEN

    start = time.perf_counter()
    path, lm_path = Path(mmproj_path), Path(lm_path)
    config = model.config
    processor = ImageProcessor.from_config(config)
    raw = [load_image(i) for i in (images if images is not None else validation_images(config))]
    squashed = [np.asarray(processor.resize(i)) for i in raw]
    pixels = processor.batch(raw)  # what PyTorch sees
    reference_features = _torch_features(model, pixels)  # (B, N, D)

    n_tags = sum(p.count(IMAGE_TOKEN) for p in prompts)
    order = [i % len(raw) for i in range(n_tags)]
    reference = torch_reference(model, tokenizer, list(prompts), pixels[order] if n_tags else None, n_greedy)
    image_token = int(config.image_token_index)
    longest = max(len(lg) for lg in reference.logits) + n_greedy + 1
    facts = mmproj_facts(config)

    n_batch = max(512, facts.image_tokens)
    with LlamaSession(lm_path, n_ctx=longest, n_threads=threads, n_batch=n_batch, all_logits=True) as session:
        with MtmdEncoder(path, session, n_threads=threads) as encoder:
            same = np.stack([encoder.encode(a) for a in squashed])
            native = np.stack([encoder.encode(np.asarray(i)) for i in raw])
        if same.shape != reference_features.shape:
            raise ExportError(
                f"libmtmd gives {same.shape[1]} x {same.shape[2]} image embeddings, PyTorch "
                f"{reference_features.shape[1]} x {reference_features.shape[2]}: {path.name} is not this model's"
            )

        def per_probe(feats: np.ndarray) -> list[np.ndarray | None]:
            out, used = [], 0
            for probe in reference.probes:
                k = probe.ids.count(image_token)
                out.append(feats[order[used : used + k]] if k else None)
                used += k
            return out

        runs = {"lm_only": reference_features, "same_pixels": same, "llama_cpp_preprocessing": native}
        answers = {
            name: _answer_run(session, reference, per_probe(feats), image_token, n_greedy)
            for name, feats in runs.items()
        }
        settings = {"n_threads": session.n_threads, "kv_type": "f16"}

    precision = quant_type_name(_file_type(path))
    features = {
        "same_pixels": feature_stats(same, reference_features),
        "llama_cpp_preprocessing": {
            **feature_stats(native, reference_features),
            "per_image": [
                {"size": list(img.size), "mean_cos": feature_stats(n[None], r[None])["mean_cos"]}
                for img, n, r in zip(raw, native, reference_features)
            ],
        },
    }
    bug = None
    if facts.has_class_embedding:
        simulated = feature_stats(same, _cls_last_features(model, pixels))
        features["cls_last_simulation"] = simulated
        if simulated["mean_cos"] > features["same_pixels"]["mean_cos"] and simulated["mean_cos"] > 0.99:
            bug = CLS_ORDER_BUG
    result = {
        "file": path.name,
        "precision": precision,
        "file_bytes": path.stat().st_size,
        "tensor_types": dict(collections.Counter(tensor_types(path).values())),
        "lm_file": lm_path.name,
        "n_images": len(raw),
        "images": VALIDATION_IMAGES_DESCRIPTION if images is None else f"{len(raw)} given images",
        "preprocessing": {
            "pytorch": f"{config.image_aspect_ratio} to {config.image_size}x{config.image_size} (PIL bicubic)",
            "llama_cpp": f"letterbox to {config.image_size}x{config.image_size}, pad colour "
            f"{LLAMA_CPP_PAD_COLOUR} (llama.cpp bicubic)",
        },
        "features": features,
        "answers": {"n_prompts": len(prompts), "n_greedy": n_greedy, **answers},
        "llama_cpp": settings,
        "seconds": round(time.perf_counter() - start, 3),
    }
    result["verdict"] = judge_mmproj(result, precision, bug)
    return result


def judge_mmproj(result: dict[str, Any], qtype: str, upstream_bug: str | None = None) -> dict[str, Any]:
    """Pass/fail of :func:`validate_mmproj`'s ``same_pixels`` features against :func:`mmproj_gate`."""
    gate = mmproj_gate(qtype)
    same = result["features"]["same_pixels"]
    problems = []
    if not same["min_cos"] >= gate.min_cos:  # also catches NaN
        problems.append(f"min cos {same['min_cos']:.5f} < {gate.min_cos}")
    if not same["mean_cos"] >= gate.mean_cos:
        problems.append(f"mean cos {same['mean_cos']:.5f} < {gate.mean_cos}")
    reason = "; ".join(problems) or "ok"
    if problems and upstream_bug:
        reason += (
            f" - libmtmd computes the class token last ({upstream_bug}, matches a simulation of the bug):"
            " the file is right for llama.cpp builds with the fix"
        )
    return {"passed": not problems, "gate": asdict(gate), "reason": reason, "upstream_bug": upstream_bug}


def describe_validation(validation: dict[str, Any]) -> str:
    """One line for ``imp info`` / ``imp export``: same-pixel and end-to-end parity."""
    same = validation["features"]["same_pixels"]
    native = validation["features"]["llama_cpp_preprocessing"]
    answers = validation["answers"]
    status = "" if validation["verdict"]["passed"] else "FAILED "
    return (
        f"{status}cos same pixels {same['mean_cos']:.6f}, letterbox {native['mean_cos']:.4f}; greedy exact "
        f"{answers['same_pixels']['exact_match']:.2f} / {answers['llama_cpp_preprocessing']['exact_match']:.2f}"
    )


def _file_type(path: Path) -> int:
    reader = gguf.GGUFReader(str(path))
    field = reader.get_field(gguf.Keys.General.FILE_TYPE)
    return int(field.contents()) if field is not None else int(LlamaFileType.ALL_F32)


# ------------------------------------------------------------------------------------ bundle step
@dataclass
class MmprojArtifact:
    """One mmproj file written by :func:`export_mmproj` (``validation`` is None when not checked)."""

    path: Path
    precision: str
    export_seconds: float
    validation: dict[str, Any] | None = None
    validation_seconds: float | None = None
    details: dict[str, Any] | None = None


def default_image_prompts(config: Any) -> list[str]:
    """Single-turn prompts with one image each, in the model's template, for the answer check."""
    from impvlm.templates import get_template

    questions = ("What colour is the shape on the left?", "How many shapes are there?", "Describe the image.")
    return [get_template(config.template).question_prompt(q) for q in questions]


def mmproj_types() -> tuple[str, ...]:
    """Every precision ``--mmproj`` accepts: the bases and llama.cpp's quantization types."""
    return tuple(QUANT_TYPES)


def export_mmproj(
    model: Any,
    tokenizer: Any,
    folder: str | Path,
    precisions: Sequence[str],
    *,
    lm_path: str | Path | None = None,
    prompts: Sequence[str] = (),
    validate: bool = True,
    threads: int | None = None,
) -> dict[str, MmprojArtifact]:
    """Write ``mmproj-<precision>.gguf`` for each precision into ``folder`` (and validate them).

    ``f32`` / ``f16`` are written directly; other types are quantized from the f32 base when ``f32``
    is asked for, else from f16 (an unasked base is written to a scratch file and removed).
    With ``validate``, each file goes through :func:`validate_mmproj` with the LM GGUF ``lm_path``
    and the image ``prompts``; a file below its gate raises :class:`ExportError`.
    """
    folder = Path(folder)
    wanted = list(dict.fromkeys(p.strip().lower() for p in precisions if p.strip()))
    if unknown := [p for p in wanted if p not in mmproj_types()]:
        raise ExportError(f"unknown mmproj type {unknown[0]!r}; choose from {', '.join(mmproj_types())}")
    if validate and lm_path is None:
        raise ExportError("validating an mmproj needs the LM GGUF it runs with")
    prompts = list(prompts) or default_image_prompts(model.config)
    mmproj_facts(model.config)  # refuse early, before writing anything
    base = "f32" if "f32" in wanted else "f16"
    keep_base = base in wanted
    scratch = folder / ".mmproj-scratch"
    base_path = (folder if keep_base else scratch) / mmproj_filename(base)
    out: dict[str, MmprojArtifact] = {}
    try:
        started = time.perf_counter()
        write_mmproj(model, base_path, dtype=base)
        if keep_base:
            seconds = round(time.perf_counter() - started, 3)
            out[base] = MmprojArtifact(base_path, base, seconds, details={"written_by": "write_mmproj"})
        for qtype in (p for p in wanted if p != base):
            started = time.perf_counter()
            dst = quantize_mmproj(base_path, folder / mmproj_filename(qtype), qtype, threads=threads)
            seconds = round(time.perf_counter() - started, 3)
            out[qtype] = MmprojArtifact(dst, qtype, seconds, details={"quantized_from": base})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    facts = asdict(mmproj_facts(model.config))
    for artifact in out.values():
        format_facts = {"architecture": ARCH_NAME, "projector_type": PROJECTOR_TYPE}
        artifact.details = {**(artifact.details or {}), **format_facts, **facts}
        if not validate:
            continue
        started = time.perf_counter()
        result = validate_mmproj(model, tokenizer, artifact.path, Path(lm_path), prompts, threads=threads)
        if not result["verdict"]["passed"]:
            raise ExportError(
                f"{artifact.path.name} ({artifact.precision}) does not match PyTorch in libmtmd: "
                f"{result['verdict']['reason']}"
            )
        artifact.validation = result
        artifact.validation_seconds = round(time.perf_counter() - started, 3)
    return {p: out[p] for p in wanted}
