"""Ask a model about an image, on PyTorch (a checkpoint) or the exported runtime (a bundle).

One-shot:     imp chat work/bundle --image cat.png "What colour is the cat?"
Interactive:  imp chat work/bundle --image cat.png      (then type questions; the answer streams)
              commands: /image PATH (switch image, new conversation), /reset, /quit

The runtime spec may carry options: exported:work/bundle?lm=q4_k_m&vision=int8, torch:work/ckpt?dtype=fp16.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from impvlm.arguments import add_max_image_pixels, add_threads, add_upstream_parts
from runtimes.sampling import MAX_TEMPERATURE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", help="checkpoint folder, bundle folder, or a runtime spec (see above)")
    parser.add_argument("question", nargs="?", help="ask once and exit; omit for an interactive session")
    parser.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    parser.add_argument("--lm", help="GGUF precision from the bundle manifest (e.g. f16, q8_0, q4_k_m)")
    parser.add_argument("--vision", help="ONNX precision from the bundle manifest (fp32, fp16, int8)")
    parser.add_argument(
        "--profile", help="device profile: default or mobile (4 threads, q4_k_m, fp16 vision)"
    )
    add_threads(parser)
    add_max_image_pixels(parser)
    add_upstream_parts(parser, scope="checkpoint only: ")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help=f"0 = greedy (default); up to {MAX_TEMPERATURE:g} samples",
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (with --temperature)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--timings", action="store_true", help="print image-encode, prefill and decode speed")
    parser.set_defaults(_trailing="question")


def run(args: argparse.Namespace) -> int:
    from impvlm.errors import ConfigError
    from runtimes.loader import load_runtime
    from runtimes.sampling import SamplingConfig

    if args.question is not None and not args.question.strip():
        raise ConfigError("the question is empty; ask something, or leave it out for an interactive session")
    # checked before the model loads: a bad setting costs nothing
    sampling = SamplingConfig(
        greedy=args.temperature <= 0, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    options = {
        "lm": args.lm,
        "vision": args.vision,
        "threads": args.threads,
        "profile": args.profile,
        "vision_tower": args.vision_tower,
        "language_model": args.language_model,
    }
    runtime = load_runtime(args.model, **options)
    runtime.max_image_pixels = args.max_image_pixels
    chat = Chat(runtime, args, sampling)
    # validate the images up front: a one-line error names a bad file before any work is done
    chat.show(list(args.image))
    if args.question is not None:
        chat.ask([], args.question)
        return 0
    chat.interact(sys.stdin)
    return 0


class Chat:
    """One conversation about the current images: answers stream to stdout, timings to stderr."""

    def __init__(self, runtime: Any, args: argparse.Namespace, sampling: Any) -> None:
        self.runtime, self.args, self.sampling = runtime, args, sampling
        self.images: list[str] = []

    def show(self, images: list[str]) -> None:
        """Switch to ``images`` (encoded now, so a bad file is named before a question is asked)."""
        self.runtime.encode_images(images)
        self.images = images

    def ask(self, conversation: list, question: str) -> list:
        """Answer ``question`` after ``conversation``; the conversation with both turns added."""
        from impvlm.templates import IMAGE_TOKEN, Turn

        tags = "".join(f"{IMAGE_TOKEN}\n" for _ in self.images) if not conversation else ""
        turns = [*conversation, Turn("user", tags + question)]
        out = self.runtime.generate(
            self.images,
            turns,
            max_new_tokens=self.args.max_new_tokens,
            sampling=self.sampling,
            on_text=lambda chunk: print(chunk, end="", flush=True),
        )
        print()
        if self.args.timings:
            t = out.timings
            print(
                f"[image {t.image_encode_s * 1000:.0f} ms ({t.images_encoded} encoded) | prefill {t.prefill_tokens} tok "
                f"{t.prefill_tokens_per_s:.1f} tok/s (reused {t.reused_tokens}) | decode {t.decode_tokens} tok "
                f"{t.decode_tokens_per_s:.1f} tok/s | first token {t.ttft_s * 1000:.0f} ms | peak RSS {t.peak_rss_mb:.0f} MB]",
                file=sys.stderr,
            )
        return [*turns, Turn("assistant", out.text)]

    def interact(self, lines: Iterable[str]) -> None:
        """Questions one per line, and the commands /image PATH, /reset and /quit."""
        conversation: list = []
        print("interactive chat: /image PATH, /reset, /quit", file=sys.stderr)
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                conversation = []
                continue
            if line.startswith("/image "):
                self.show([line.split(" ", 1)[1].strip()])
                conversation = []
                continue
            conversation = self.ask(conversation, line)
