"""The vision tower + projector of an Imp / LLaVA-Phi checkpoint as a llama.cpp ``mmproj`` GGUF.

Stock llama.cpp tools (``llama-mtmd-cli``, ``llama-server``) run a LLaVA-1.5-style model from two
files: the LM GGUF (:mod:`export.gguf_lm`) and an *mmproj* file holding the vision encoder and the
projector, read by llama.cpp's multimodal library (libmtmd, ``tools/mtmd/clip.cpp``). This module
writes that file; :mod:`export.kinds.mmproj` quantizes it, and :mod:`export.mmproj_validate` reads it
back through libmtmd (:class:`export.llama.MtmdEncoder`) and measures it against PyTorch. The tools
also need the model's chat template, which the LM GGUF does not carry: :func:`llama_cpp_chat_template`
(the bundle's ``gguf/chat-template.jinja``).

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
  :func:`~export.mmproj_validate.validate_mmproj` measures both on the same pixels (file and graph) and end to end
  (preprocessing included), at the feature level and on greedy answers.

Example::

    write_mmproj(model, "bundle/gguf/mmproj-f16.gguf", dtype="f16")
    with LlamaSession("bundle/gguf/model-f16.gguf") as lm, MtmdEncoder("bundle/gguf/mmproj-f16.gguf", lm) as enc:
        features = enc.encode(np.asarray(Image.open("cat.png").convert("RGB")))  # (N, D_lm)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGUFType, LlamaFileType

from export.errors import ExportError
from export.gguf_file import BASE_DTYPES, TANH_GELUS, GGUFTensor, write_gguf_file

log = logging.getLogger(__name__)

ARCH_NAME = "clip"
PROJECTOR_TYPE = gguf.VISION_PROJECTOR_TYPE_NAMES[gguf.VISION_PROJECTOR_TYPE.MLP]  # "mlp"
#: The Imp projector llama.cpp's ``mlp`` graph computes: Linear, GELU, Linear (``mm.0`` / ``mm.2``).
SUPPORTED_PROJECTORS = ("mlp2x_gelu",)
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
    Quantize the result with :func:`export.quantize.quantize_gguf`. The file appears atomically.
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
