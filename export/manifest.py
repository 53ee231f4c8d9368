"""The bundle format: ``manifest.json`` as typed records, read and verified.

:func:`read_manifest` reads a bundle's ``manifest.json`` into a :class:`Manifest` and refuses a
bundle whose files changed since export or disagree with the manifest (:mod:`export.manifest_check`);
:func:`verify_bundle_matches` one made for another model. A runtime builds prompts from the template
strings the manifest holds (:meth:`TemplateInfo.template`). The writer is :mod:`export.bundle`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from export.manifest_check import check_fields, check_files, short_repr
from export.tokenizer_check import TokenizerInfo
from impvlm.errors import BundleError
from impvlm.templates import IMAGE_TOKEN, TEMPLATE_STYLES, TEMPLATES, Template, get_template

FORMAT_NAME = "impvlm-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_FILE = "manifest.json"


class Kind(StrEnum):
    VISION = "vision"
    LM = "lm"
    TOKENIZER = "tokenizer"
    MMPROJ = "mmproj"  # llama.cpp multimodal projector (export.mmproj)


# ------------------------------------------------------------------------------------ manifest schema


@dataclass(frozen=True)
class FileRecord:
    """One file of the bundle (key: its path relative to the bundle, with ``/``)."""

    sha256: str
    bytes: int
    kind: str  # a Kind
    precision: str | None = None


@dataclass
class Artifact:
    """One runnable file: ``manifest[kind][precision]``."""

    file: str
    precision: str
    export_seconds: float
    validation: dict[str, Any] | None = None  # None: exported with validate=False
    validation_seconds: float | None = None
    extra_files: list[str] = field(default_factory=list)  # e.g. ONNX external data
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    language_model: str  # transformers model family of the LM
    vision_tower: str  # transformers model_type of the tower
    projector: str
    embedding_width: int  # D_lm: width of image_features and of the LM's embeddings
    vision_width: int
    image_tokens: int  # N: embeddings one <image> token becomes
    image_size: int
    vocab_size: int
    context_length: int


@dataclass(frozen=True)
class SourceInfo:
    checkpoint: str
    checkpoint_sha256: str  # impvlm.checkpoint.checkpoint_hash: config.json + weight files
    layout: str  # "impvlm" or "upstream"


@dataclass(frozen=True)
class TemplateInfo:
    """The conversation template, spelled out so a runtime needs no Python to build prompts."""

    name: str
    style: str
    system: str
    roles: list[str]
    sep: str
    sep2: str
    stop_str: str
    image_token: str
    #: ``str.format`` patterns of a single-turn prompt ready for generation, with and without image.
    question_prompt: str
    question_prompt_text_only: str

    @classmethod
    def from_name(cls, name: str) -> TemplateInfo:
        return cls.of(get_template(name))

    @classmethod
    def of(cls, t: Template) -> TemplateInfo:
        return cls(
            name=t.name,
            style=t.style,
            system=t.system,
            roles=list(t.roles),
            sep=t.sep,
            sep2=t.sep2,
            stop_str=t.stop_str,
            image_token=IMAGE_TOKEN,
            question_prompt=_format_pattern(t.question_prompt("\0")),
            question_prompt_text_only=_format_pattern(t.question_prompt("\0", with_image=False)),
        )

    def template(self) -> Template:
        """The template these strings spell out: what a runtime renders prompts with (no lookup by
        name, so a template this impvlm does not know renders too)."""
        roles = (self.roles[0], self.roles[1])
        return Template(self.name, self.style, self.system, roles, self.sep, self.sep2)  # type: ignore[arg-type]

    def check(self, where: Path) -> None:
        """Refuse strings that are not the template impvlm builds under the same name, or (a template
        this impvlm does not know) that do not follow from each other."""
        if self.name in TEMPLATES:
            reference = TemplateInfo.from_name(self.name)
            problem = "is not the one this impvlm builds prompts with"
            advice = "the manifest was edited or needs a re-export"
        else:
            reference = TemplateInfo.of(self.template())
            problem, advice = "does not follow from its other strings", "the manifest was edited"
        for item in fields(reference):
            have, want = getattr(self, item.name), getattr(reference, item.name)
            if have != want:
                raise BundleError(
                    f"{where}: template {self.name!r} {item.name} {short_repr(have)} {problem} "
                    f"({short_repr(want)}): {advice}"
                )


@dataclass(frozen=True)
class TokenIds:
    image: int | None  # None: the tokenizer has no <image> token; images go where the prompt says <image>
    eos: int
    pad: int | None
    bos: int | None
    stop: int  # id of template.stop_str: generation ends there


@dataclass
class Manifest:
    """Everything ``manifest.json`` holds; field names are its keys."""

    model: ModelInfo
    source: SourceInfo
    template: TemplateInfo
    tokens: TokenIds
    image: dict[str, Any]  # ImageProcessor.to_dict()
    tokenizer: str  # folder, relative to the bundle
    vision: dict[str, Artifact]
    lm: dict[str, Artifact]
    files: dict[str, FileRecord]
    tools: dict[str, str | None]
    timings: dict[str, float]
    calibration: dict[str, Any] = field(default_factory=dict)  # what the GGUF checks ran on
    mmproj: dict[str, Artifact] = field(default_factory=dict)  # llama.cpp mmproj GGUFs
    tokenizer_info: TokenizerInfo | None = None  # None in bundles written before it was recorded
    created: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        head = {k: out.pop(k) for k in ("format", "format_version", "created")}
        return {**head, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Typed view of a manifest dict; raises KeyError / TypeError on a malformed one."""
        return cls(
            model=ModelInfo(**data["model"]),
            source=SourceInfo(**data["source"]),
            template=TemplateInfo(**data["template"]),
            tokens=TokenIds(**data["tokens"]),
            image=dict(data["image"]),
            tokenizer=data["tokenizer"],
            vision={k: Artifact(**v) for k, v in data["vision"].items()},
            lm={k: Artifact(**v) for k, v in data["lm"].items()},
            files={k: FileRecord(**v) for k, v in data["files"].items()},
            tools=dict(data["tools"]),
            timings=dict(data["timings"]),
            calibration=dict(data.get("calibration") or {}),
            mmproj={k: Artifact(**v) for k, v in (data.get("mmproj") or {}).items()},
            tokenizer_info=TokenizerInfo(**data["tokenizer_info"]) if data.get("tokenizer_info") else None,
            created=data.get("created", ""),
            format=data["format"],
            format_version=data["format_version"],
        )

    def write(self, bundle_dir: Path) -> Path:
        path = Path(bundle_dir) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def _format_pattern(prompt: str) -> str:
    return prompt.replace("{", "{{").replace("}", "}}").replace("\0", "{question}")


# ------------------------------------------------------------------------------------ reading bundles


def read_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """The bundle's ``manifest.json`` as a typed :class:`Manifest`, after the checks of
    :func:`load_manifest`: what a runtime reads a bundle with."""
    return _load(Path(bundle_dir), verify)[1]


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json`` and (with ``verify``) check every file's size and sha256, then the
    manifest against what the files say about themselves (:mod:`export.manifest_check`). Returns it
    as the dict it is on disk (:func:`read_manifest` gives the typed records).

    Raises:
        BundleError: one line naming the problem: no such folder, no manifest, not a bundle, an
            unsupported format version, a malformed manifest, a missing file, a changed file, a
            manifest that disagrees with its files.
    """
    return _load(Path(bundle_dir), verify)[0]


def check_bundle(root: Path, manifest: Manifest) -> None:
    """The checks :func:`load_manifest` makes after the sha256 of each file: the template and what
    the files say about themselves."""
    where = root / MANIFEST_FILE
    manifest.template.check(where)
    check_files(where, manifest)


def _load(root: Path, verify: bool) -> tuple[dict[str, Any], Manifest]:
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root}")
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an impvlm bundle (or an unfinished export)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise BundleError(f"{path} is not an {FORMAT_NAME} manifest")
    version = data.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported by this impvlm "
            f"(supports {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    manifest = _typed(data, path)
    check_fields(manifest, path)
    if verify:
        for rel, record in manifest.files.items():
            _verify_file(root, rel, record)
        check_bundle(root, manifest)
    return data, manifest


def _typed(data: dict[str, Any], path: Path) -> Manifest:
    try:
        manifest = Manifest.from_dict(data)
    except KeyError as exc:
        raise BundleError(f"{path} is malformed: missing key {exc}") from None
    except (TypeError, AttributeError) as exc:
        raise BundleError(f"{path} is malformed: {exc}") from None
    template = manifest.template
    roles = template.roles
    if template.style not in TEMPLATE_STYLES or not (isinstance(roles, list) and len(roles) == 2):
        raise BundleError(
            f"{path} is malformed: template {template.name!r} needs a style of {', '.join(TEMPLATE_STYLES)} "
            "and two roles"
        )
    sections = ((Kind.VISION, manifest.vision), (Kind.LM, manifest.lm), (Kind.MMPROJ, manifest.mmproj))
    for kind, artifacts in sections:
        for precision, artifact in artifacts.items():
            for rel in (artifact.file, *artifact.extra_files):
                if rel not in manifest.files:
                    raise BundleError(f"{path} is malformed: {kind}/{precision} file {rel} is not in 'files'")
    for rel in manifest.files:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise BundleError(f"{path} is malformed: file path {rel!r} leaves the bundle")
    return manifest


def _verify_file(root: Path, rel: str, record: FileRecord) -> None:
    file = root / rel
    if not file.is_file():
        raise BundleError(f"bundle {root} is missing {rel}")
    size = file.stat().st_size
    if size != record.bytes:
        raise BundleError(
            f"{rel} in bundle {root} changed since export: {size} bytes, manifest says {record.bytes}"
        )
    if sha256_file(file) != record.sha256:
        raise BundleError(f"{rel} in bundle {root} changed since export: sha256 does not match the manifest")


def verify_bundle_matches(manifest: dict[str, Any] | Manifest, config: Any) -> None:
    """Raise :class:`BundleError` when the bundle was made for a model other than ``config``'s.

    Compares model id, embedding width, image token count, image size and vocabulary size with an
    :class:`~impvlm.config.ImpConfig`.
    """
    info = manifest.model if isinstance(manifest, Manifest) else _typed(manifest, Path(MANIFEST_FILE)).model
    pairs = (
        ("model id", info.id, config.model_id),
        ("embedding width", info.embedding_width, int(config.hidden_size)),
        ("image tokens", info.image_tokens, int(config.num_image_tokens)),
        ("image size", info.image_size, int(config.image_size)),
        ("vocab size", info.vocab_size, int(config.vocab_size)),
    )
    wrong = [f"{name} {have!r} != {want!r}" for name, have, want in pairs if have != want]
    if wrong:
        raise BundleError(f"the bundle was made for another model ({'; '.join(wrong)}; bundle vs model)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def iter_artifacts(manifest: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(kind, precision, entry)`` over the vision and lm sections of a manifest dict."""
    for kind in (Kind.VISION, Kind.LM, Kind.MMPROJ):
        for precision, entry in manifest.get(str(kind), {}).items():
            yield str(kind), precision, entry
