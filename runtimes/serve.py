"""An OpenAI-compatible chat-completions server over one runtime (FastAPI + uvicorn).

Endpoints: ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``, ``GET /health``.
Messages follow OpenAI's format; user content may hold ``image_url`` parts with ``data:`` URLs
(base64) or, when the server was given an image root, local paths / ``file://`` URLs inside it.
Remote ``http(s)`` URLs are refused (the server fetches nothing).

Behaviour a client should know:

- One runtime serves every request; requests are serialized (one generation at a time, in arrival
  order) and more than ``max_waiting`` queued requests get ``503``.
- Greedy decoding unless ``temperature > 0`` (then seeded temperature / top-p sampling; an unseeded
  request draws a random seed). ``n`` must be 1.
- ``system`` / ``developer`` messages are ignored: the model's own template has a fixed system prompt
  it was trained with. The conversation must alternate user / assistant and end with a user turn;
  consecutive messages of one role are joined with a newline. An image part becomes ``<image>`` at
  its place in the message (text parts joined with newlines); a literal ``<image>`` in text is refused.
- Invalid requests (malformed JSON, missing messages, broken base64, data that is not an image, an
  image above the byte / pixel limits, a prompt longer than the context) get ``4xx`` with OpenAI's
  error body ``{"error": {"message", "type", "param", "code"}}`` and leave the server as it was.
- Streaming sends ``chat.completion.chunk`` events (role first, then content deltas, then the finish
  reason; usage when ``stream_options.include_usage``), then ``data: [DONE]``. A client that goes
  away stops the generation at the next token.

Example::

    app = create_app(load_runtime("native:work/bundle"), limits=ServeLimits(image_root=Path("imgs")))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from impvlm.errors import ImageError, ImageTooLargeError, ImpError
from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS, load_image
from impvlm.templates import IMAGE_TOKEN, Turn
from runtimes.base import Generation, Runtime
from runtimes.sampling import SamplingConfig, check_sampling

log = logging.getLogger(__name__)

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


def prompt_positions(runtime: Runtime, job: Job) -> int:
    """KV positions the job's prompt takes (text tokens + image embeddings), without running it."""
    text = runtime.render(job.turns, len(job.images))
    pieces = runtime.plan(text, [f"image-{i}" for i in range(len(job.images))])
    return sum(runtime.num_image_tokens if not isinstance(p, list) else len(p) for p in pieces)


# ------------------------------------------------------------------------------------ the server
class ChatServer:
    """One runtime behind an asyncio lock; :meth:`app` is the FastAPI application."""

    def __init__(
        self, runtime: Runtime, model_name: str | None = None, limits: ServeLimits | None = None
    ) -> None:
        self.runtime = runtime
        self.limits = limits or ServeLimits()
        identity = runtime.identity()
        self.model_name = model_name or str(identity.get("model_id") or runtime.name)
        self.created = int(time.time())
        self.served = 0
        self.waiting = 0
        self._lock: asyncio.Lock | None = None

    # -------------------------------------------------------------- serialization
    async def _run(
        self, work: Callable[[threading.Event], Any]
    ) -> tuple[asyncio.Future[Any], threading.Event]:
        """Wait for the runtime, then run ``work(cancel)`` in a thread. The lock is released when
        the thread ends, not when the caller goes away, so two generations never overlap; a caller
        that stops listening sets ``cancel``."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.waiting >= self.limits.max_waiting:
            raise APIError(503, "the server is busy; retry later", "server_busy", kind="server_error")
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        cancel = threading.Event()
        lock = self._lock
        try:
            future = asyncio.get_running_loop().run_in_executor(None, work, cancel)
        except BaseException:
            lock.release()
            raise
        future.add_done_callback(lambda _: lock.release())
        return future, cancel

    def _generate_kwargs(self, job: Job) -> dict[str, Any]:
        return {"max_new_tokens": job.max_new_tokens, "sampling": job.sampling, "stop": job.stop}

    def check_job(self, job: Job) -> None:
        """Refuse a prompt that does not fit the context (400 ``context_length_exceeded``)."""
        try:
            needed = prompt_positions(self.runtime, job)
        except ImpError as exc:
            raise APIError(400, str(exc), "invalid_messages", "messages") from None
        if needed + 1 > self.runtime.context_length:
            raise APIError(
                400,
                f"the prompt needs {needed} positions (text tokens + {self.runtime.num_image_tokens} per image) "
                f"but the context holds {self.runtime.context_length}",
                "context_length_exceeded",
                "messages",
            )

    # -------------------------------------------------------------- responses
    async def complete(self, job: Job) -> dict[str, Any]:
        """Run a job to the end: a ``chat.completion`` object."""

        def work(_cancel: threading.Event) -> Generation:
            return self.runtime.generate(job.images, job.turns, **self._generate_kwargs(job))

        future, _ = await self._run(work)
        try:
            out = await asyncio.shield(future)
        except ImpError as exc:
            raise APIError(400, str(exc), "invalid_request") from None
        self.served += 1
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": out.text},
            "logprobs": None,
            "finish_reason": out.finish_reason,
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(out)}

    async def start_stream(self, job: Job) -> AsyncIterator[str]:
        """Start a job now (waiting for the runtime first) and return its SSE events.

        The generation runs whether or not the events are consumed (bounded by ``max_new_tokens``),
        so a client that never reads cannot hold the runtime forever; one that stops reading
        cancels it at the next token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown)
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work(cancel: threading.Event) -> None:
            steps = self.runtime.iter_generate(job.images, job.turns, **self._generate_kwargs(job))
            try:
                while not cancel.is_set():
                    try:
                        put(("text", next(steps)))
                    except StopIteration as done:
                        put(("done", done.value))
                        return
            except BaseException as exc:  # reported to the client as an error event
                put(("error", exc))
            finally:
                steps.close()

        _, cancel = await self._run(work)
        return self._events(job, queue, cancel)

    async def _events(
        self, job: Job, queue: asyncio.Queue[tuple[str, Any]], cancel: threading.Event
    ) -> AsyncIterator[str]:
        head = self._head("chat.completion.chunk")
        try:
            yield _sse({**head, "choices": [_delta({"role": "assistant", "content": ""})]})
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield _sse({**head, "choices": [_delta({"content": value})]})
                    continue
                if kind == "done":
                    self.served += 1
                    yield _sse({**head, "choices": [_delta({}, value.finish_reason)]})
                    if job.include_usage:
                        yield _sse({**head, "choices": [], "usage": _usage(value)})
                else:
                    log.error("generation failed: %s", value)
                    status, kind_name = (
                        (400, "invalid_request_error")
                        if isinstance(value, ImpError)
                        else (500, "server_error")
                    )
                    yield _sse(APIError(status, str(value), "generation_failed", kind=kind_name).body())
                break
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()

    def _head(self, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": obj,
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": None,
        }

    # -------------------------------------------------------------- app
    def app(self) -> FastAPI:
        app = FastAPI(
            title="impvlm", description="OpenAI-compatible chat completions with images", version="1"
        )
        server = self

        @app.exception_handler(APIError)
        async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
            return JSONResponse(exc.body(), status_code=exc.status)

        @app.exception_handler(StarletteHTTPException)
        async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
            body = APIError(exc.status_code, str(exc.detail), kind="invalid_request_error").body()
            return JSONResponse(body, status_code=exc.status_code)

        @app.exception_handler(Exception)
        async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
            log.exception("request failed")
            body = APIError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error").body()
            return JSONResponse(body, status_code=500)

        @app.get("/health")
        async def health() -> dict[str, Any]:
            lock = server._lock
            return {
                "status": "ok",
                "model": server.model_name,
                "runtime": server.runtime.identity(),
                "busy": bool(lock and lock.locked()),
                "waiting": server.waiting,
                "requests_served": server.served,
            }

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [server._model_card()]}

        @app.get("/v1/models/{model_id}")
        async def model(model_id: str) -> dict[str, Any]:
            if model_id != server.model_name:
                raise APIError(404, f"model {model_id!r} not found", "model_not_found", "model")
            return server._model_card()

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> JSONResponse | StreamingResponse:
            body = await _read_body(request, server.limits.max_body_bytes)
            # decoding images and tokenizing are CPU work: off the event loop, outside the lock
            job = await asyncio.to_thread(build_job, parse_request(body), server.limits)
            await asyncio.to_thread(server.check_job, job)
            if job.stream:
                events = await server.start_stream(job)
                headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
                return StreamingResponse(events, media_type="text/event-stream", headers=headers)
            return JSONResponse(await server.complete(job))

        return app

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "impvlm"}


def create_app(runtime: Runtime, model_name: str | None = None, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``runtime`` (see the module docstring for the behaviour)."""
    return ChatServer(runtime, model_name, limits).app()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is larger than {limit} bytes", "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is larger than {limit} bytes", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _usage(out: Generation) -> dict[str, int]:
    prompt = out.timings.prefill_tokens + out.timings.reused_tokens
    completion = len(out.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
