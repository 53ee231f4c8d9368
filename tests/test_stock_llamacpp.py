"""The README's stock llama.cpp commands, run with the real ``llama-mtmd-cli`` and ``llama-server``.

Both tools are built once from the llama.cpp that llama-cpp-python vendors (the library the
``native`` runtime runs; :mod:`runtimes.stock_llama_cpp`, cached in ``~/.cache/impvlm``). A tiny
bundle with its mmproj and its ``chat-template.jinja`` is asked the synthetic eval questions about
square images; each tool must render exactly the training prompt and give `imp chat native:`'s
greedy answer.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from export.bundle import export_bundle
from export.mmproj import CHAT_TEMPLATE_FILE, LLAMA_CPP_MEDIA_MARKER
from impvlm.cli import main
from impvlm.templates import IMAGE_TOKEN, get_template
from runtimes.stock_llama_cpp import build_stock_tools, built_tools, missing_toolchain

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python"),
]
N_CASES = 12  # (square image, question) pairs from the synthetic eval set
MAX_NEW_TOKENS = 24  # the tiny random model's answers differ between prompts only after ~20 tokens
THREADS = "1"


@pytest.fixture(scope="module")
def tools():
    if built_tools() is None and (reason := missing_toolchain()):
        pytest.skip(f"cannot build llama.cpp's tools: {reason}")
    return build_stock_tools()


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("stock") / "bundle"
    export_bundle(tiny_checkpoint, out, gguf=["f16"], onnx=[], mmproj=["f16"], threads=int(THREADS))
    return out


@pytest.fixture(scope="module")
def cases(synthetic_world):
    paths, _ = synthetic_world
    records = json.loads(paths.eval.read_text(encoding="utf-8"))[:N_CASES]
    return [(paths.root / r["image"], r["prompt"]) for r in records]


@pytest.fixture(scope="module")
def native_answers(bundle, cases):
    """`imp chat native:BUNDLE --image IMG QUESTION`, greedy, as a user runs it."""
    answers = []
    for image, question in cases:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            argv = ["chat", f"native:{bundle}", "--image", str(image), question]
            assert main([*argv, "--max-new-tokens", str(MAX_NEW_TOKENS), "--threads", THREADS]) == 0
        answers.append(out.getvalue().strip())
    return answers


def training_prompt(question: str) -> str:
    return get_template("phi2").question_prompt(question)


# ------------------------------------------------------------------------------------ llama-mtmd-cli
#: logged (with --verbose) after the answer. llama.cpp's logger prints from a worker thread and may
#: lose its last lines when the process exits (common/log.cpp: the logger is leaked on purpose), so a
#: run whose log lacks this line may have a cut answer and is repeated.
MTMD_CLI_LAST_LINE = "llama_perf_context_print:"


def mtmd_cli(tools, bundle: Path, *args: str) -> subprocess.CompletedProcess:
    template = (bundle / "gguf" / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    cmd = [str(tools.mtmd_cli), "-m", str(bundle / "gguf" / "model-f16.gguf")]
    cmd += ["--mmproj", str(bundle / "gguf" / "mmproj-f16.gguf"), "--jinja", "--chat-template", template]
    cmd += ["--temp", "0", "-n", str(MAX_NEW_TOKENS), "-t", THREADS, "-c", "512", "--verbose", *args]
    for _ in range(5):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        if MTMD_CLI_LAST_LINE in done.stderr:
            return done
    pytest.fail(f"llama-mtmd-cli's log lost its tail five times in a row: {cmd}")


def test_mtmd_cli_rejects_a_template_file(tools, bundle):
    """Why the README passes the template's text: this tool has no --chat-template-file."""
    done = subprocess.run(
        [str(tools.mtmd_cli), "--chat-template-file", str(bundle / "gguf" / CHAT_TEMPLATE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "invalid argument" in done.stderr


@pytest.mark.parametrize("marker", ["prepended by the tool", "written by the user"])
def test_mtmd_cli_renders_the_training_prompt_and_answers_like_native(
    tools, bundle, cases, native_answers, marker
):
    for (image, question), expected in zip(cases, native_answers, strict=True):
        prompt = question if marker == "prepended by the tool" else f"{LLAMA_CPP_MEDIA_MARKER}\n{question}"
        done = mtmd_cli(tools, bundle, "--image", str(image), "-p", prompt)
        rendered = training_prompt(question).replace(IMAGE_TOKEN, LLAMA_CPP_MEDIA_MARKER)
        assert f"formatted_chat.prompt: {rendered}\n" in done.stderr
        assert done.stdout.strip() == expected, (image.name, question)


# ------------------------------------------------------------------------------------ llama-server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tools, bundle, tmp_path_factory):
    """``llama-server`` started as the README says; yields its base URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    cmd = [str(tools.server), "-m", str(bundle / "gguf" / "model-f16.gguf")]
    cmd += ["--mmproj", str(bundle / "gguf" / "mmproj-f16.gguf"), "--jinja"]
    cmd += ["--chat-template-file", str(bundle / "gguf" / CHAT_TEMPLATE_FILE)]
    cmd += ["-c", "2048", "--host", "127.0.0.1", "--port", str(port), "-t", THREADS]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"llama-server exited: see {log.name}"
            with contextlib.suppress(OSError):
                if http(f"{url}/health", timeout=5).get("status") == "ok":
                    break
            assert time.monotonic() < deadline, f"llama-server not healthy after 180 s: see {log.name}"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def user_message(image: Path, question: str, image_first: bool = True) -> dict:
    data = base64.b64encode(image.read_bytes()).decode()
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "text", "text": question},
    ]
    return {"role": "user", "content": parts if image_first else parts[::-1]}


SYSTEM = {"role": "system", "content": "You are a pirate. Answer in French."}


def test_llama_server_renders_the_training_prompt(server, cases):
    """Image part first or last, with or without a system message: the prompt is the trained one
    (the server's media marker is random per process; /props names it)."""
    marker = http(f"{server}/props")["media_marker"]
    image, question = cases[0]
    for messages in (
        [user_message(image, question)],
        [user_message(image, question, image_first=False)],
        [SYSTEM, user_message(image, question)],
    ):
        prompt = http(f"{server}/apply-template", {"messages": messages})["prompt"]
        assert prompt.replace(marker, IMAGE_TOKEN) == training_prompt(question)


@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system-ignored"])
def test_llama_server_answers_like_native(server, cases, native_answers, system):
    for (image, question), expected in zip(cases, native_answers, strict=True):
        messages = [SYSTEM, user_message(image, question)] if system else [user_message(image, question)]
        body = {"messages": messages, "temperature": 0, "max_tokens": MAX_NEW_TOKENS}
        reply = http(f"{server}/v1/chat/completions", body)
        assert reply["choices"][0]["message"]["content"].strip() == expected, (image.name, question)
