"""`imp serve`: the OpenAI-compatible server, over real HTTP on loopback, on a tiny exported bundle.

The server runs in-process (uvicorn in a thread, the native runtime: LM GGUF + mmproj through
libmtmd) for most tests, and as a real `imp serve` subprocess (the exported runtime) once.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "httpx", "llama_cpp")),
    reason="needs the serve extra (fastapi, uvicorn), httpx and llama-cpp-python",
)
THREADS = 1
QUESTION = "What colour is the shape on the left?"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("serve") / "bundle"
    export_bundle(tiny_checkpoint, out, gguf=["f16"], onnx=["fp32"], mmproj=["f16"], validate=False)
    return out


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from export.mmproj_validate import validation_images
    from impvlm import build_config

    root = tmp_path_factory.mktemp("images")
    for i, image in enumerate(validation_images(build_config("imp-tiny"))[:3]):
        image.save(root / f"scene{i}.png")
    (root / "notes.txt").write_text("not an image")
    Image.new("RGB", (600, 600), (10, 20, 30)).save(root / "huge.png")  # above the pixel limit
    return root


@pytest.fixture(scope="module")
def runtime(bundle):
    from runtimes.native import LlamaCppNativeRuntime

    with LlamaCppNativeRuntime(bundle, threads=THREADS) as rt:
        yield rt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runtime, image_root):
    """``(base_url, ChatServer)`` of a live uvicorn server in a thread."""
    import uvicorn

    from runtimes.serve import ChatServer
    from runtimes.serve_request import ServeLimits

    limits = ServeLimits(
        max_body_bytes=2_000_000,
        max_image_bytes=300_000,
        max_image_pixels=512 * 512,
        max_images=3,
        max_new_tokens=24,
        default_max_tokens=8,
        image_root=image_root,
    )
    chat = ChatServer(runtime, limits=limits)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(chat.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.02)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", chat
    uv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture()
def client(server):
    import httpx

    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def data_url(image: Image.Image | bytes, mime: str = "image/png") -> str:
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        image = buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def user(*parts: dict | str) -> dict:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return {"role": "user", "content": content}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def assert_healthy(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["runtime"]["runtime"] == "native"


# ------------------------------------------------------------------------------------ happy paths
def test_chat_completion_answers_like_the_runtime(client, server, runtime, image_root):
    image = Image.open(image_root / "scene1.png")
    expected = runtime.generate([image], QUESTION, max_new_tokens=8)
    body = {"model": "whatever", "messages": [user(image_part(data_url(image)), QUESTION)], "max_tokens": 8}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == "imp-tiny"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == expected.finish_reason
    usage = out["usage"]
    assert usage["completion_tokens"] == len(expected.token_ids) <= 8
    assert usage["prompt_tokens"] == expected.timings.prefill_tokens + expected.timings.reused_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_sends_openai_chunks_then_done(client, image_root):
    url = data_url(Image.open(image_root / "scene0.png"))
    body = {"messages": [user(image_part(url), QUESTION)], "max_tokens": 10}
    plain = client.post("/v1/chat/completions", json=body).json()
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=stream) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip() == plain["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == plain["choices"][0]["finish_reason"] and not any(finish[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_local_paths_inside_the_image_root(client, image_root):
    answers = []
    for url in ("scene2.png", str(image_root / "scene2.png"), f"file://{image_root / 'scene2.png'}"):
        r = client.post("/v1/chat/completions", json={"messages": [user(image_part(url), QUESTION)]})
        assert r.status_code == 200, r.text
        answers.append(r.json()["choices"][0]["message"]["content"])
    assert len(set(answers)) == 1


def test_conversation_text_only_and_sampling(client, image_root):
    url = data_url(Image.open(image_root / "scene0.png"))
    messages = [
        {"role": "system", "content": "You are terse."},  # ignored: the template's system prompt is used
        user(image_part(url), QUESTION),
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And on the right?"},
    ]
    assert client.post("/v1/chat/completions", json={"messages": messages}).status_code == 200
    text_only = {"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 4}
    assert client.post("/v1/chat/completions", json=text_only).status_code == 200
    sampled = {**text_only, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    a = client.post("/v1/chat/completions", json=sampled).json()["choices"][0]["message"]["content"]
    b = client.post("/v1/chat/completions", json=sampled).json()["choices"][0]["message"]["content"]
    assert a == b  # seeded


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["imp-tiny"]
    assert client.get("/v1/models/imp-tiny").json()["owned_by"] == "impvlm"
    assert client.get("/v1/models/other").status_code == 404
    health = client.get("/health").json()
    assert health["runtime"]["mmproj"] == "f16" and health["busy"] is False


def test_requests_are_serialized(server, image_root):
    """Concurrent requests run one at a time on the one runtime: each gets the answer it gets alone."""
    import httpx

    urls = [data_url(Image.open(image_root / f"scene{i}.png")) for i in range(3)]
    bodies = [{"messages": [user(image_part(u), QUESTION)], "max_tokens": 12} for u in urls]
    with httpx.Client(base_url=server[0], timeout=120) as c:
        alone = [
            c.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"] for b in bodies
        ]
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        with httpx.Client(base_url=server[0], timeout=120) as c:
            results[i] = c.post("/v1/chat/completions", json=bodies[i % 3]).json()["choices"][0]["message"][
                "content"
            ]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(6)] == alone * 2


def test_a_client_leaving_mid_stream_stops_the_generation(server, client, runtime, monkeypatch):
    import httpx

    calls = []
    evaluate = runtime._eval_tokens

    def slow_eval(ids):  # ~40 ms per token: the client hangs up long before 24 tokens
        calls.append(len(ids))
        time.sleep(0.04)
        return evaluate(ids)

    monkeypatch.setattr(runtime, "_eval_tokens", slow_eval)
    body = {"messages": [user("Tell me a long story.")], "max_tokens": 24}
    full = client.post("/v1/chat/completions", json=body).json()
    assert full["usage"]["completion_tokens"] == 24, "the tiny model stopped early: pick another prompt"
    calls.clear()
    stream = {**body, "stream": True}
    with (
        httpx.Client(base_url=server[0], timeout=60) as c,
        c.stream("POST", "/v1/chat/completions", json=stream) as r,
    ):
        next(r.iter_lines())  # the role chunk, then hang up
    deadline = time.time() + 30
    while client.get("/health").json()["busy"] and time.time() < deadline:
        time.sleep(0.05)
    assert not client.get("/health").json()["busy"]
    assert len(calls) < 20, calls  # stopped at the next token, not after all 24
    ok = client.post("/v1/chat/completions", json={"messages": [user("Hi")], "max_tokens": 2})
    assert ok.status_code == 200


# ------------------------------------------------------------------------------------ refusals
def _png_bytes(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


BAD_REQUESTS = {
    "malformed JSON": (b'{"messages": [', 400, "invalid_json"),
    "not an object": (b"[1, 2]", 400, "invalid_json"),
    "missing messages": ({"model": "imp-tiny"}, 400, "invalid_value"),
    "empty messages": ({"messages": []}, 400, "invalid_value"),
    "unknown role": ({"messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value"),
    "broken base64": (
        {"messages": [user(image_part("data:image/png;base64,iVBOR$$w0K"))]},
        400,
        "invalid_image",
    ),
    "not base64 encoded": ({"messages": [user(image_part("data:image/png,rawbytes"))]}, 400, "invalid_image"),
    "non-image data": (
        {"messages": [user(image_part(data_url(b"just some text, not a picture")))]},
        400,
        "invalid_image",
    ),
    "non-image media type": (
        {"messages": [user(image_part(data_url(_png_bytes(), "text/plain")))]},
        400,
        "invalid_image",
    ),
    "oversized image bytes": (
        {"messages": [user(image_part(data_url(os.urandom(400_000))))]},
        400,
        "image_too_large",
    ),
    "oversized image pixels": (
        {"messages": [user(image_part(data_url(_png_bytes((1000, 600)))))]},
        400,
        "image_too_large",
    ),
    "oversized local image": ({"messages": [user(image_part("huge.png"))]}, 400, "image_too_large"),
    "local non-image": ({"messages": [user(image_part("notes.txt"))]}, 400, "invalid_image"),
    "missing local file": ({"messages": [user(image_part("nope.png"))]}, 400, "image_not_found"),
    "path outside the root": (
        {"messages": [user(image_part("../../etc/passwd"))]},
        403,
        "image_path_not_allowed",
    ),
    "remote url": (
        {"messages": [user(image_part("https://example.com/cat.png"))]},
        400,
        "unsupported_image_url",
    ),
    "too many images": ({"messages": [user(*[image_part("scene0.png")] * 4)]}, 400, "too_many_images"),
    "too long prompt": ({"messages": [user("word " * 3000)]}, 400, "context_length_exceeded"),
    "image tag in text": ({"messages": [user("<image> what?")]}, 400, "invalid_value"),
    "ends with assistant": (
        {"messages": [user("hi"), {"role": "assistant", "content": "hello"}]},
        400,
        "invalid_messages",
    ),
    "image in assistant turn": (
        {"messages": [user("hi"), {"role": "assistant", "content": [image_part("scene0.png")]}, user("ok")]},
        400,
        "invalid_messages",
    ),
    "n > 1": ({"messages": [user("hi")], "n": 2}, 400, "invalid_value"),
    "temperature above 2": ({"messages": [user("hi")], "temperature": 2.5}, 400, "invalid_value"),
    "top_p of 0": ({"messages": [user("hi")], "top_p": 0}, 400, "invalid_value"),
    "deeply nested JSON": (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json"),
    "negative max_tokens": ({"messages": [user("hi")], "max_tokens": -1}, 400, "invalid_value"),
    "too many stops": ({"messages": [user("hi")], "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_value"),
    "body too large": (b'{"messages": "' + b"x" * 2_100_000 + b'"}', 413, "request_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_and_leave_the_server_healthy(client, case):
    payload, status, code = BAD_REQUESTS[case]
    for stream in (False, True):
        if isinstance(payload, bytes):
            if stream:
                continue
            r = client.post(
                "/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
            )
        else:
            r = client.post("/v1/chat/completions", json={**payload, "stream": stream})
        assert r.status_code == status, (case, r.text)
        error = r.json()["error"]
        assert error["code"] == code and error["message"] and error["type"]
    assert_healthy(client)


def test_a_decompression_bomb_is_refused_as_too_large(client, bomb_png):
    """400 megapixels in a 49 kB PNG: refused by the shared image guard before any decoding."""
    body = {"messages": [user(image_part(data_url(bomb_png.read_bytes())), "What?")]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "image_too_large" and "400000000 pixels" in error["message"]
    assert_healthy(client)


def test_the_server_still_answers_after_the_refusals(client):
    r = client.post("/v1/chat/completions", json={"messages": [user("Hello")], "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert client.get("/nowhere").json()["error"]["type"] == "invalid_request_error"


def test_local_paths_are_refused_without_an_image_root(runtime):
    from runtimes.serve_request import APIError, ServeLimits, load_request_image

    with pytest.raises(APIError) as info:
        load_request_image("scene0.png", ServeLimits())
    assert info.value.status == 403 and "--image-root" in info.value.message


def test_build_job_merges_roles_and_places_images(image_root):
    from runtimes.serve_request import ServeLimits, build_job, parse_request

    body = {
        "messages": [
            {"role": "developer", "content": "ignored"},
            user("first", image_part("scene0.png")),
            {"role": "user", "content": "second"},
        ],
        "max_tokens": 5000,
        "stop": "END",
    }
    job = build_job(parse_request(json.dumps(body).encode()), ServeLimits(image_root=image_root))
    assert [t.role for t in job.turns] == ["user"]
    assert job.turns[0].content == "first\n<image>\nsecond"
    assert len(job.images) == 1 and job.images[0].mode == "RGB"
    assert job.max_new_tokens == ServeLimits().max_new_tokens and job.stop == ["END"]
    assert job.sampling.greedy


# ------------------------------------------------------------------------------------ the command
def start_imp_serve(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start `imp serve ARGS --port P` and wait for /health; retried on a port taken meanwhile."""
    import httpx

    for _ in range(3):
        port = free_port()
        with open(log, "wb") as out:
            cmd = [sys.executable, "-m", "impvlm.cli", "serve", *args, "--port", str(port)]
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                httpx.get(f"{url}/health", timeout=2).raise_for_status()
                return proc, url
            except httpx.HTTPError:
                time.sleep(0.2)
        stop(proc)
        if "address already in use" not in log.read_text(errors="replace").lower():
            break
    pytest.fail(f"imp serve did not come up: {log.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started
    proc.wait(timeout=30)


def test_imp_serve_command(bundle, image_root, tmp_path):
    """`imp serve BUNDLE` (exported runtime) in a real subprocess: health, one image request, stop."""
    import httpx

    log = tmp_path / "serve.log"
    args = [str(bundle), "--threads", "1", "--image-root", str(image_root), "--log-level", "warning"]
    proc, url = start_imp_serve(args, log)
    try:
        assert httpx.get(f"{url}/health").json()["runtime"]["runtime"] == "exported"
        body = {"messages": [user(image_part("scene1.png"), QUESTION)], "max_tokens": 4}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
    finally:
        stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text(errors="replace")
    assert "serving {'runtime': 'exported'" in log.read_text(errors="replace")


def test_imp_serve_checks_the_port_before_loading_the_model(bundle, capsys):
    from impvlm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(bundle), "--port", "70000"])
    assert exit_info.value.code == 2 and "--port: 70000 is not a port number" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(bundle), "--port", str(taken.getsockname()[1])]) == 2
    out = capsys.readouterr()  # refused before the model loaded (it prints "serving" once loaded)
    assert "address already in use" in out.err.lower() and "serving" not in out.out
    assert len(out.err.strip().splitlines()) == 1
    for threads in ("0", "-2"):
        with pytest.raises(SystemExit):
            main(["serve", str(bundle), "--threads", threads])
        assert "--threads" in capsys.readouterr().err


def test_chat_on_a_bundle_refuses_a_decompression_bomb(bundle, bomb_png, capsys):
    from impvlm.cli import main

    assert main(["chat", str(bundle), "--threads", "1", "--image", str(bomb_png), "What?"]) == 2
    err = capsys.readouterr().err
    assert "bomb.png is too large to decode" in err and "Traceback" not in err


def test_imp_serve_refuses_a_bad_setup(bundle, tmp_path, capsys):
    from impvlm.cli import main

    assert main(["serve", str(bundle), "--image-root", str(tmp_path / "missing")]) == 2
    assert "--image-root" in capsys.readouterr().err
    assert main(["serve", str(bundle), "--runtime", "native", "--vision", "fp32"]) == 2
    assert "do not apply to the native runtime" in capsys.readouterr().err
