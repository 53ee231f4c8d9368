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

The request schema and its validation (request body -> :class:`~runtimes.serve_request.Job`) live in
:mod:`runtimes.serve_request`; this module is the HTTP side: the app, the one-at-a-time runtime,
responses and streaming.

Example::

    app = create_app(load_runtime("native:work/bundle"), limits=ServeLimits(image_root=Path("imgs")))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from impvlm.errors import ImpError
from runtimes.base import Generation, Runtime
from runtimes.serve_request import APIError, Job, ServeLimits, build_job, parse_request

log = logging.getLogger(__name__)


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
