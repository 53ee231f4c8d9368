"""Serve a bundle (or checkpoint) over HTTP: an OpenAI-compatible chat-completions API with images.

  imp serve work/bundle                                  exported runtime (ONNX vision + llama.cpp LM)
  imp serve work/bundle --runtime native --lm q4_k_m     llama.cpp's own multimodal path (mmproj)
  imp serve work/bundle --port 8080 --image-root ./images

Endpoints: POST /v1/chat/completions (stream or not), GET /v1/models, GET /health. Images come as
image_url content parts holding data: URLs (base64), or local paths / file:// URLs under
--image-root (disabled without it). Requests run one at a time; greedy unless temperature > 0.

  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' -d '{"messages":
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
    {"type": "text", "text": "What colour is the shape on the left?"}]}]}'
"""

from __future__ import annotations

import argparse

from impvlm.arguments import add_max_image_pixels, add_threads, tcp_port


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "model", metavar="BUNDLE", help="bundle folder (or a checkpoint folder / runtime spec)"
    )
    parser.add_argument(
        "--runtime",
        choices=("exported", "native"),
        help="exported: ONNX vision + GGUF LM (the default for a bundle); "
        "native: LM GGUF + mmproj through llama.cpp's libmtmd (needs `imp export --mmproj`)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=tcp_port, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--lm", help="GGUF precision of the LM (e.g. f16, q8_0, q4_k_m)")
    parser.add_argument("--vision", help="ONNX precision of the vision encoder (exported runtime)")
    parser.add_argument("--mmproj", help="mmproj precision (native runtime)")
    add_threads(parser)
    parser.add_argument("--context-length", type=int, help="KV cache size (default: the model's)")
    parser.add_argument("--model-name", help="the model id clients see (default: the bundle's model id)")
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="allow local image paths / file:// URLs inside DIR (default: refused)",
    )
    parser.add_argument("--max-image-mb", type=float, default=20.0, help="largest image file (default 20 MB)")
    add_max_image_pixels(parser)
    parser.add_argument("--max-images", type=int, default=8, help="images per request (default 8)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=1024, help="cap on a request's max_tokens (default 1024)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impvlm.errors import ConfigError
    from runtimes.loader import load_runtime

    try:
        import uvicorn

        from runtimes.serve import create_app
        from runtimes.serve_request import MB, ServeLimits
    except ImportError as exc:
        raise ConfigError(f"serving needs FastAPI and uvicorn: pip install 'impvlm[serve]' ({exc})") from None
    if args.image_root and not Path(args.image_root).is_dir():
        raise ConfigError(f"--image-root {args.image_root} is not a folder")
    check_can_listen(args.host, args.port)  # before the model loads, which may take a while
    spec = f"{args.runtime}:{args.model}" if args.runtime else args.model
    runtime = load_runtime(
        spec,
        lm=args.lm,
        vision=args.vision,
        mmproj=args.mmproj,
        threads=args.threads,
        context_length=args.context_length,
    )
    limits = ServeLimits(
        max_image_bytes=int(args.max_image_mb * MB),
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_new_tokens=args.max_new_tokens,
        image_root=Path(args.image_root) if args.image_root else None,
    )
    app = create_app(runtime, model_name=args.model_name, limits=limits)
    print(f"serving {runtime.identity()} on http://{args.host}:{args.port}/v1", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        runtime.close()
    return 0


def check_can_listen(host: str, port: int) -> None:
    """Refuse a host / port the server could not listen on (taken, not an address of this machine)."""
    import socket

    from impvlm.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
