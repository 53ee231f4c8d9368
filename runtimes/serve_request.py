"""The OpenAI chat-completions request: its schema, the limits a request must keep, and the one path
from a request body to a :class:`Job` the runtime can run (messages -> turns with ``<image>`` tags,
image URLs -> decoded images, sampling and stop settings).

Everything here raises :class:`APIError` (an HTTP status and OpenAI's error body) for a request the
server refuses; :mod:`runtimes.serve` turns it into the response. No FastAPI here: the parsing is
plain pydantic, testable without a server.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from impvlm.errors import ImageError, ImageTooLargeError
from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS, load_image
from impvlm.templates import IMAGE_TOKEN, Turn
from runtimes.sampling import SamplingConfig, check_sampling

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; everything beyond is refused with a 4xx before any work."""

    max_body_bytes: int = 64 * MB
    max_image_bytes: int = 20 * MB  # per decoded image file
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # width x height of one image (decompression bombs)
    max_images: int = 8
    max_new_tokens: int = 1024  # cap on max_tokens
    default_max_tokens: int = 256
    max_stop: int = 4
    max_waiting: int = 32  # queued requests beyond the running one
    image_root: Path | None = None  # local paths / file:// URLs allowed inside it; None: refused


class APIError(Exception):
    """A request the server refuses: HTTP status + OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------ request schema
class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Schema):
    url: str
    detail: str | None = None


class ContentPart(_Schema):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | str | None = None


class Message(_Schema):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Schema):
    include_usage: bool = False


class ChatRequest(_Schema):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        if value is not None:
            check_sampling(value, 1.0)  # the same rule as `imp chat --temperature`
        return value

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float | None) -> float | None:
        if value is not None:
            check_sampling(0.0, value)
        return value


@dataclass
class Job:
    """A validated request, ready for the runtime."""

    turns: list[Turn]
    images: list[Image.Image]
    max_new_tokens: int
    sampling: SamplingConfig
    stop: list[str]
    stream: bool
    include_usage: bool


# ------------------------------------------------------------------------------------ request -> job
def parse_request(body: bytes) -> ChatRequest:
    """JSON bytes -> :class:`ChatRequest`, or :class:`APIError` 400 naming the first problem."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply", "invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", "invalid_json")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        raise APIError(
            400, f"{param or 'request'}: {first.get('msg')}", "invalid_value", param or None
        ) from None


def load_request_image(url: str, limits: ServeLimits, param: str = "image_url") -> Image.Image:
    """A ``data:`` URL (base64) or a local path under ``limits.image_root`` -> an RGB PIL image."""
    if url.startswith("data:"):
        data = _decode_data_url(url, limits, param)
        name = "the data URL"
    elif url.startswith(("http://", "https://")):
        raise APIError(
            400, "remote image URLs are not supported; send a data: URL", "unsupported_image_url", param
        )
    else:
        path = _local_path(url, limits, param)
        if path.stat().st_size > limits.max_image_bytes:
            raise APIError(
                400,
                f"image {path.name} is larger than {limits.max_image_bytes} bytes",
                "image_too_large",
                param,
            )
        data = path.read_bytes()
        name = path.name
    try:
        return load_image(data, limits.max_image_pixels, name=name)
    except ImageTooLargeError as exc:
        raise APIError(400, str(exc), "image_too_large", param) from None
    except ImageError as exc:
        raise APIError(400, str(exc), "invalid_image", param) from None


def _decode_data_url(url: str, limits: ServeLimits, param: str) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise APIError(400, "malformed data URL (no comma)", "invalid_image", param)
    fields = header.split(";")
    if "base64" not in fields[1:]:
        raise APIError(
            400, "image data URLs must be base64 encoded (data:image/png;base64,...)", "invalid_image", param
        )
    if fields[0] and not fields[0].startswith("image/"):
        raise APIError(400, f"data URL media type {fields[0]!r} is not an image", "invalid_image", param)
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise APIError(400, f"image is larger than {limits.max_image_bytes} bytes", "image_too_large", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"invalid base64 in data URL: {exc}", "invalid_image", param) from None


def _local_path(url: str, limits: ServeLimits, param: str) -> Path:
    if limits.image_root is None:
        message = "local image paths are disabled on this server (start it with --image-root DIR)"
        raise APIError(403, message, "image_path_not_allowed", param)
    raw = url[len("file://") :] if url.startswith("file://") else url
    root = Path(limits.image_root).resolve()
    path = (root / raw).resolve() if not Path(raw).is_absolute() else Path(raw).resolve()
    if not path.is_relative_to(root):
        raise APIError(
            403, f"image path {raw!r} is outside the server's image root", "image_path_not_allowed", param
        )
    if not path.is_file():
        raise APIError(400, f"image file not found: {raw}", "image_not_found", param)
    return path


def build_job(request: ChatRequest, limits: ServeLimits) -> Job:
    """Messages -> alternating turns with ``<image>`` tags + decoded images; sampling and limits."""
    turns: list[Turn] = []
    images: list[Image.Image] = []
    for i, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            continue  # the template's own system prompt is used
        content = _message_text(message, i, images, limits)
        role = "user" if message.role == "user" else "assistant"
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, f"{turns[-1].content}\n{content}")
        else:
            turns.append(Turn(role, content))  # type: ignore[arg-type]
    if not turns or turns[0].role != "user":
        raise APIError(400, "the conversation must start with a user message", "invalid_messages", "messages")
    if turns[-1].role != "user":
        raise APIError(400, "the last message must be from the user", "invalid_messages", "messages")
    wanted = request.max_completion_tokens or request.max_tokens or limits.default_max_tokens
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > limits.max_stop or any(not s for s in stop):
        raise APIError(400, f"stop takes 1 to {limits.max_stop} non-empty strings", "invalid_value", "stop")
    temperature = request.temperature or 0.0
    sampling = SamplingConfig(
        greedy=temperature <= 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=request.top_p if request.top_p is not None else 1.0,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
    )
    return Job(
        turns=turns,
        images=images,
        max_new_tokens=min(int(wanted), limits.max_new_tokens),
        sampling=sampling,
        stop=stop,
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
    )


def _message_text(message: Message, index: int, images: list[Image.Image], limits: ServeLimits) -> str:
    content = message.content
    if content is None:
        raise APIError(
            400, f"message {index} has no content", "invalid_messages", f"messages.{index}.content"
        )
    parts = [ContentPart(type="text", text=content)] if isinstance(content, str) else content
    pieces: list[str] = []
    for j, part in enumerate(parts):
        param = f"messages.{index}.content.{j}"
        if part.type == "text":
            text = part.text or ""
            if IMAGE_TOKEN in text:
                raise APIError(
                    400,
                    f"text may not contain the {IMAGE_TOKEN} tag; send an image_url part",
                    "invalid_value",
                    param,
                )
            pieces.append(text)
            continue
        if message.role != "user":
            raise APIError(400, "only user messages may hold images", "invalid_messages", param)
        url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
        if not url:
            raise APIError(400, "image_url part without a url", "invalid_image", param)
        if len(images) >= limits.max_images:
            raise APIError(400, f"at most {limits.max_images} images per request", "too_many_images", param)
        images.append(load_request_image(url, limits, param))
        pieces.append(IMAGE_TOKEN)
    return "\n".join(pieces)
