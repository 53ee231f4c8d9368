"""Does ``manifest.json`` agree with the files it describes? Checked when a bundle is loaded.

The sha256 of each file in ``files`` detect a file that changed since export (a copy gone wrong, a
file swapped for another one). They cannot see an edit of ``manifest.json`` itself (an image token
count, the system prompt) nor a file replaced together with its hash. So each file is also asked
what it says about itself, and a manifest that disagrees is refused with the first difference:

- ``image``: a well-formed section whose size is the model's (:func:`check_fields`, always);
- template: the strings of the impvlm template of its name (``TemplateInfo.check``);
- tokenizer: its identity hash, and the template's stop string / ``<image>`` at the recorded ids;
- vision ONNX: input ``(batch, 3, S, S)`` with S the image size, output ``(batch, image_tokens,
  embedding_width)``, read from the graph without loading its weights (:mod:`export.onnx_io`);
- LM GGUF: embedding width, context length, vocabulary size, the file type of its precision, the
  eos id, and a token list equal to the tokenizer's (so also the stop token at ``tokens.stop``);
- mmproj GGUF: image size, patch grid = image tokens, projection width, mean / std, file type.

None of this is a signature: someone who rewrites a file, its hash and every manifest field that
describes it consistently is not detected. What is caught is an edit that leaves the bundle
inconsistent, which is what makes a bundle answer nonsense.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from impvlm.errors import BundleError

#: Keys of the manifest's ``image`` section a runtime needs.
IMAGE_KEYS = ("size", "mean", "std", "aspect_ratio")
#: Integer fields of ``model`` and ``tokens`` (True: may be null).
MODEL_INTS = ("embedding_width", "vision_width", "image_tokens", "image_size", "vocab_size", "context_length")
TOKEN_INTS = {"image": True, "eos": False, "stop": False, "pad": True, "bos": True}


def check_fields(manifest: Any, where: Path) -> None:
    """The manifest's own fields agree: sizes and ids are integers, and a usable ``image`` section
    has the model's image size.

    ``manifest`` is a :class:`export.manifest.Manifest`; ``where`` is its ``manifest.json``.
    """
    from impvlm.image_processing import ImageProcessor

    numbers = [(f"model.{k}", getattr(manifest.model, k), False) for k in MODEL_INTS]
    numbers += [(f"tokens.{k}", getattr(manifest.tokens, k), null) for k, null in TOKEN_INTS.items()]
    for name, value, nullable in numbers:
        if not (value is None and nullable) and (type(value) is not int or value < 0):
            raise BundleError(f"{where} is malformed: {name} is {value!r}, not a non-negative integer")

    image = manifest.image
    missing = [k for k in IMAGE_KEYS if k not in image]
    if missing:
        raise BundleError(f"{where} is malformed: the image section has no {missing[0]!r}")
    try:
        processor = ImageProcessor.from_config(image)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where} is malformed: image section {short_repr(image)}: {exc}") from None
    if (
        not isinstance(image["size"], int)
        or processor.size != manifest.model.image_size
        or processor.size < 1
    ):
        raise BundleError(
            f"{where}: image size {image['size']!r} is not the model's image_size {manifest.model.image_size}: "
            "the manifest was edited"
        )
    if len(processor.mean) != 3 or len(processor.std) != 3 or not all(s > 0 for s in processor.std):
        raise BundleError(f"{where} is malformed: image mean/std need three values (std > 0)")


def check_files(where: Path, manifest: Any) -> None:
    """Every file the manifest ``where`` lists agrees with what the manifest says about it (see the
    module; the template is :meth:`export.manifest.TemplateInfo.check`'s)."""
    tokens = _tokenizer_tokens(where, manifest)
    for precision, artifact in manifest.vision.items():
        _check_onnx(where, manifest, precision, artifact)
    for precision, artifact in manifest.lm.items():
        _check_lm(where, manifest, precision, artifact.file, tokens)
    for precision, artifact in manifest.mmproj.items():
        _check_mmproj(where, manifest, precision, artifact.file)


def check_vision_shapes(
    where: Path, manifest: Any, rel: str, pixels: Sequence[Any], features: Sequence[Any]
) -> None:
    """The vision graph ``rel`` takes ``(batch, 3, S, S)`` pixels and gives ``(batch, N, D)`` features
    with S, N, D the image size, image tokens and embedding width of the manifest ``where`` (symbolic
    dims pass)."""
    model, size = manifest.model, manifest.image["size"]
    expected = (
        ("input", pixels, (None, 3, size, size), ("", "channels", "image size", "image size")),
        ("output", features, (None, model.image_tokens, model.embedding_width),
         ("", "image tokens", "embedding width")),
    )  # fmt: skip
    for side, shape, want, names in expected:
        if len(shape) != len(want):
            raise BundleError(
                f"{rel} has a {len(shape)}-d {side}, expected {len(want)}-d: not a vision encoder"
            )
        for have, wanted, name in zip(shape, want, names, strict=True):
            if wanted is not None and isinstance(have, int) and have != wanted:
                raise _disagree(where, rel, name, have, wanted)


# ------------------------------------------------------------------------------------ per file kind


def _tokenizer_tokens(where: Path, manifest: Any) -> dict[int, str]:
    """id -> token of the bundle's ``tokenizer.json``, checked against the manifest."""
    from tokenizers import Tokenizer

    from export.tokenizer_check import tokenizer_sha256

    root, rel = where.parent, f"{manifest.tokenizer}/tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(root / rel))
    except Exception as exc:  # the tokenizers library raises its own Exception types
        raise BundleError(f"{rel} in bundle {root} cannot be read: {_first_line(exc)}") from None
    info = manifest.tokenizer_info
    if info is not None and tokenizer_sha256(tokenizer) != info.sha256:
        raise BundleError(
            f"{rel} is not the tokenizer the bundle was exported with (its hash differs from the manifest's)"
        )
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    if by_id and max(by_id) >= manifest.model.vocab_size:
        raise BundleError(
            f"{rel} has token ids up to {max(by_id)}, {where.name} says the vocabulary has "
            f"{manifest.model.vocab_size}: the manifest was edited or the tokenizer is from another model"
        )
    template, ids = manifest.template, manifest.tokens
    named = [("stop", ids.stop, template.stop_str), ("image", ids.image, template.image_token)]
    for name, token_id, text in named:  # decoded: byte-level BPE spells the plain template's "\n" "Ċ"
        if token_id is not None and (
            token_id not in by_id or tokenizer.decode([token_id], skip_special_tokens=False) != text
        ):
            raise BundleError(
                f"{where}: tokens.{name} is {token_id}, which is {by_id.get(token_id)!r} in {rel}, not "
                f"{text!r}: the manifest was edited"
            )
    return by_id


def _check_onnx(where: Path, manifest: Any, precision: str, artifact: Any) -> None:
    from export.onnx_io import OnnxFormatError, graph_io

    root, rel, details = where.parent, artifact.file, artifact.details or {}
    try:
        io = graph_io(root / rel)
    except (OSError, OnnxFormatError) as exc:
        raise BundleError(f"{rel} in bundle {root} is not an ONNX graph: {exc}") from None
    names = (details.get("input", "pixel_values"), details.get("output", "image_features"))
    for name, side in zip(names, (io.inputs, io.outputs), strict=True):
        if name not in side:
            raise BundleError(f"{rel} has no {name!r}; the manifest's vision/{precision} names it")
    check_vision_shapes(where, manifest, rel, io.inputs[names[0]], io.outputs[names[1]])


def _check_lm(where: Path, manifest: Any, precision: str, rel: str, tokens: dict[int, str]) -> None:
    from gguf import Keys

    root = where.parent
    arch = _gguf_fields(root, rel, [Keys.General.ARCHITECTURE]).get(Keys.General.ARCHITECTURE)
    width, context = Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), Keys.LLM.CONTEXT_LENGTH.format(arch=arch)
    wanted = [width, context, Keys.Tokenizer.EOS_ID, Keys.General.FILE_TYPE, Keys.Tokenizer.LIST]
    meta = _gguf_fields(root, rel, wanted)
    listed = meta.get(Keys.Tokenizer.LIST) or []
    pairs = [
        ("embedding width", meta.get(width), manifest.model.embedding_width),
        ("context length", meta.get(context), manifest.model.context_length),
        ("eos token id", meta.get(Keys.Tokenizer.EOS_ID), manifest.tokens.eos),
        ("file type", meta.get(Keys.General.FILE_TYPE), _file_type(precision)),
        ("vocabulary size", len(listed), manifest.model.vocab_size),
    ]
    _compare(where, rel, pairs)
    for token_id, token in tokens.items():
        if listed[token_id] != token:
            raise BundleError(
                f"{rel} has token {token_id} {listed[token_id]!r}, the bundle's tokenizer {token!r}: "
                "the tokenizer or the GGUF is from another model"
            )


def _check_mmproj(where: Path, manifest: Any, precision: str, rel: str) -> None:
    from gguf import Keys

    root = where.parent
    clip = Keys.ClipVision
    wanted = [clip.IMAGE_SIZE, clip.PATCH_SIZE, clip.PROJECTION_DIM, clip.IMAGE_MEAN, clip.IMAGE_STD]
    meta = _gguf_fields(root, rel, [*wanted, Keys.General.FILE_TYPE])
    size, patch = meta.get(clip.IMAGE_SIZE), meta.get(clip.PATCH_SIZE)
    grid = (size // patch) ** 2 if isinstance(size, int) and isinstance(patch, int) and patch > 0 else None
    pairs = [
        ("image size", size, manifest.image["size"]),
        ("image tokens", grid, manifest.model.image_tokens),
        ("projection width", meta.get(clip.PROJECTION_DIM), manifest.model.embedding_width),
        ("file type", meta.get(Keys.General.FILE_TYPE), _file_type(precision)),
    ]
    _compare(where, rel, pairs)
    for name, key in (("mean", clip.IMAGE_MEAN), ("std", clip.IMAGE_STD)):
        have, want = meta.get(key) or [], manifest.image[name]
        if len(have) != len(want) or not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(have, want)):
            raise _disagree(where, rel, f"image {name}", have, want)


# ------------------------------------------------------------------------------------ helpers


def _gguf_fields(root: Path, rel: str, keys: Sequence[str]) -> dict[str, Any]:
    """Metadata values of a GGUF file as plain Python values (absent keys are left out)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(root / rel))
        return {key: field.contents() for key in keys if (field := reader.get_field(key)) is not None}
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise BundleError(f"{rel} in bundle {root} is not a readable GGUF file: {_first_line(exc)}") from None


def _file_type(precision: str) -> int | None:
    from export.quant_types import QUANT_TYPES

    return int(QUANT_TYPES[precision].file_type) if precision in QUANT_TYPES else None


def _compare(where: Path, rel: str, pairs: list[tuple[str, Any, Any]]) -> None:
    for name, have, want in pairs:
        if have != want:
            raise _disagree(where, rel, name, have, want)


def _disagree(where: Path, rel: str, name: str, have: Any, want: Any) -> BundleError:
    return BundleError(
        f"{rel} says {name} {short_repr(have)}, {where.name} says {short_repr(want)}: the manifest was edited "
        "or the file is from another model"
    )


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` of a value (a record as its dict), cut to ``limit`` characters."""
    text = repr(asdict(value) if hasattr(value, "__dataclass_fields__") else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
