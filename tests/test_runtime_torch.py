"""TorchRuntime: the shared generate() protocol on PyTorch."""

import numpy as np
import pytest
import torch

from impvlm.checkpoint import load_model
from impvlm.errors import DataError, ImageError
from impvlm.templates import Turn
from runtimes.base import PromptTooLongError, Runtime
from runtimes.loader import load_runtime
from runtimes.sampling import SamplingConfig


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint):
    return load_runtime(tiny_checkpoint)


@pytest.fixture(scope="module")
def images(synthetic_world):
    paths, _ = synthetic_world
    return sorted(paths.images.glob("eval_*.png"))[:3]


def test_greedy_equals_transformers_generate(runtime, tiny_checkpoint, images):
    out = runtime.generate([images[0]], "What colour is the shape?", max_new_tokens=12)
    model = load_model(tiny_checkpoint)
    from impvlm.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_checkpoint)
    ids = tok(runtime.render("What colour is the shape?", 1), return_tensors="pt").input_ids
    px = torch.from_numpy(runtime.image_processor.batch([images[0]]))
    ref = model.generate(
        input_ids=ids,
        pixel_values=px,
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=sorted(runtime.stop_ids),
        pad_token_id=0,
    )[0].tolist()
    ref = [t for t in ref if t not in runtime.stop_ids]
    assert out.token_ids == ref
    assert out.timings.prefill_tokens > runtime.num_image_tokens and out.timings.images_encoded == 1


def test_reuse_gives_the_same_answers_as_fresh_runs(runtime, images):
    questions = ["What colour is the shape?", "How many shapes are there?", "Is there a circle?"]
    reused = []
    for image in images[:2]:
        for q in questions:
            reused.append(runtime.generate([image], q, max_new_tokens=8))
    assert any(g.timings.reused_tokens > runtime.num_image_tokens for g in reused)
    fresh = [
        runtime.generate([image], q, max_new_tokens=8, reuse=False) for image in images[:2] for q in questions
    ]
    assert [g.token_ids for g in reused] == [g.token_ids for g in fresh]
    assert all(g.timings.reused_tokens == 0 for g in fresh)


def test_multi_turn_reuses_the_conversation_prefix(runtime, images):
    first = runtime.generate([images[0]], [Turn("user", "<image>\nWhat shape?")], max_new_tokens=4)
    turns = [
        Turn("user", "<image>\nWhat shape?"),
        Turn("assistant", first.text),
        Turn("user", "What colour?"),
    ]
    second = runtime.generate([images[0]], turns, max_new_tokens=4)
    assert second.timings.reused_tokens >= runtime.num_image_tokens and second.timings.images_encoded == 0


def test_streaming_and_sampling(runtime, images):
    chunks = list(runtime.stream([images[0]], "Describe.", max_new_tokens=10))
    full = runtime.generate([images[0]], "Describe.", max_new_tokens=10)
    assert "".join(chunks).strip() == full.text
    s = SamplingConfig(greedy=False, temperature=1.5, seed=7)
    a = runtime.generate([images[0]], "Describe.", max_new_tokens=10, sampling=s)
    b = runtime.generate([images[0]], "Describe.", max_new_tokens=10, sampling=s)
    assert a.token_ids == b.token_ids
    t = full.timings
    assert t.total_s > 0 and t.decode_tokens_per_s >= 0 and t.peak_rss_mb > 0


def test_text_only_prompt(runtime):
    out = runtime.generate(None, "Say something.", max_new_tokens=5)
    assert out.timings.images_encoded == 0 and out.finish_reason in ("stop", "length")


def test_bad_inputs_name_the_cause(runtime, images, tmp_path):
    with pytest.raises(DataError, match="1 <image> tags but 2 images"):
        runtime.generate(images[:2], "<image>\nWhat?", max_new_tokens=2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="broken.png"):
        runtime.generate([broken], "What?", max_new_tokens=2)
    with pytest.raises(PromptTooLongError, match="context holds"):
        runtime.generate([images[0]], "word " * 2000, max_new_tokens=2)


def test_chat_cli_one_shot_and_interactive(tiny_checkpoint, images):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "impvlm.cli", "chat", str(tiny_checkpoint), "--image", str(images[0])]
    one = subprocess.run(
        [*cmd, "What colour?", "--max-new-tokens", "4", "--timings"], capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr
    assert "prefill" in one.stderr and "decode" in one.stderr
    chat = subprocess.run(
        [*cmd, "--max-new-tokens", "3"], input="What?\nAnd?\n/quit\n", capture_output=True, text=True
    )
    assert chat.returncode == 0, chat.stderr
    bad = subprocess.run([*cmd[:-1], "missing.png", "What?"], capture_output=True, text=True)
    assert bad.returncode == 2 and "image not found: missing.png" in bad.stderr


class Bigram(Runtime):
    """A stand-in model that writes ``script`` after any prompt (its next token depends only on how
    much of the script the sequence already ends with). Everything else is real: the shared
    generation loop, and the tokenizer, template and stop tokens of ``like``."""

    name = "bigram"

    def __init__(self, like: Runtime, script: list[int]) -> None:
        super().__init__()
        for attr in ("template", "tokenizer", "image_processor", "num_image_tokens", "context_length"):
            setattr(self, attr, getattr(like, attr))
        self.stop_ids, self.special_ids = like.stop_ids, like.special_ids
        self.script, self.seen = script, []
        self.vocab = like.tokenizer.get_vocab_size()

    def _encode_pixels(self, pixels):
        return np.zeros((len(pixels), self.num_image_tokens, 4), np.float32)

    def _truncate(self, n):
        self.seen = self.seen[:n]

    def _eval_embeddings(self, embeddings):
        return self._eval_tokens([-1] * len(embeddings))

    def _eval_tokens(self, ids):
        self.seen += ids
        done = max(k for k in range(len(self.script) + 1) if k == 0 or self.seen[-k:] == self.script[:k])
        logits = np.zeros(self.vocab, np.float32)
        logits[self.script[done] if done < len(self.script) else min(self.stop_ids)] = 1.0
        return logits


def streamed_and_returned(runtime: Runtime, **kw) -> tuple[str, str]:
    chunks = list(runtime.stream(None, "Say it.", **kw))
    return "".join(chunks), runtime.generate(None, "Say it.", **kw).text


def test_streamed_and_returned_answers_follow_one_rule(runtime):
    script = runtime.tokenize(" It is é")
    tail = runtime.tokenize("é")
    assert len(tail) >= 2  # the byte-level vocabulary splits é (2 bytes) into byte tokens
    model = Bigram(runtime, script)
    # stopped between the bytes of é: both drop the unfinished character (the answer kept U+FFFD)
    streamed, returned = streamed_and_returned(model, max_new_tokens=len(script) - 1)
    assert returned == streamed == "It is"
    streamed, returned = streamed_and_returned(model, max_new_tokens=len(script) + 2)
    assert returned == streamed == "It is é"
    # a stop string split over tokens and trailing whitespace: what streams is what is returned
    model = Bigram(runtime, runtime.tokenize(" red. \n#") + runtime.tokenize("## more"))
    streamed, returned = streamed_and_returned(model, max_new_tokens=20, stop=["###"])
    assert returned == streamed == "red."
    model = Bigram(runtime, runtime.tokenize(" red circle \n\n"))
    streamed, returned = streamed_and_returned(model, max_new_tokens=20)
    assert returned == streamed == "red circle"


def test_chat_refuses_bad_settings_and_huge_images_in_one_line(tiny_checkpoint, images, bomb_png, capsys):
    from impvlm.cli import main

    base = ["chat", str(tiny_checkpoint), "--max-new-tokens", "2"]
    refused = {
        "an image of 400 megapixels": (
            [*base, "--image", str(bomb_png), "What?"],
            "bomb.png is too large to decode",
        ),
        "a lowered pixel limit": (
            [*base, "--image", str(images[0]), "--max-image-pixels", "100", "What?"],
            "more than the limit of 100",
        ),
        "temperature above 2": ([*base, "--temperature", "5", "What?"], "temperature 5.0 is out of range"),
        "top-p of 0": ([*base, "--temperature", "1", "--top-p", "0", "What?"], "top_p 0.0 is out of range"),
        "an empty question": ([*base, "  "], "the question is empty"),
    }
    for case, (argv, message) in refused.items():
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (case, err)
    for threads in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--threads", threads, "What?"])
        assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err
