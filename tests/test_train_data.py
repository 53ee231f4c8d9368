"""LLaVA-format data: lazy records, labels from the template code, bad records, collator and sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impvlm.errors import DataError
from impvlm.image_processing import ImageProcessor
from impvlm.templates import IGNORE_INDEX, get_template
from impvlm.tokenizer import SYSTEM_PROMPT, train_tokenizer
from impvlm.train.data import (
    ConversationDataset,
    DataCollator,
    ModalityLengthGroupedSampler,
    read_records,
)

N_IMAGE_TOKENS = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llava")
    (root / "img").mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 30), colour).save(root / "img" / f"{i}.png")
    (root / "img" / "broken.png").write_bytes(b"\x89PNG not really")
    texts = [SYSTEM_PROMPT, "USER: What colour is it? ASSISTANT: red", "a red square on the left."] * 30
    train_tokenizer(texts, 400, root / "tok")
    return root


@pytest.fixture(scope="module")
def tokenizer(folder: Path):
    from impvlm.tokenizer import load_tokenizer

    return load_tokenizer(folder / "tok")


def records() -> list[dict]:
    return [
        {
            "id": "img-tag-last",
            "image": "img/0.png",
            "conversations": [
                {"from": "human", "value": "What colour is it?\n<image>"},
                {"from": "gpt", "value": "red"},
                {"from": "human", "value": "And the shape?"},
                {"from": "gpt", "value": "square"},
            ],
        },
        {
            "id": "text",
            "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "hello"}],
        },
        {
            "id": "no-tag",
            "image": "img/1.png",
            "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "blue"}],
        },
    ]


def make(tokenizer, folder, recs, **kw) -> ConversationDataset:
    kw.setdefault("max_length", 256)
    return ConversationDataset(
        recs, folder, tokenizer, get_template("phi2"), ImageProcessor(64), N_IMAGE_TOKENS, **kw
    )


def test_lazy_records_labels_from_template_and_image_front(tokenizer, folder):
    ds = make(tokenizer, folder, records())
    assert len(ds) == 3
    sample = ds[0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert sample.input_ids.count(image_id) == 1
    text = tokenizer.decode(sample.input_ids)
    assert "USER: <image>\nWhat colour is it? ASSISTANT: red</s>USER: And the shape?" in text
    kept = [t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE_INDEX]
    assert tokenizer.decode(kept) == " red</s> square</s>"
    assert sample.pixel_values.shape == (3, 64, 64) and sample.pixel_values.dtype == np.float32
    text_only = ds[1]
    assert text_only.pixel_values is None and image_id not in text_only.input_ids
    assert ds[2].input_ids.count(image_id) == 1  # an image record without the tag gets one in front
    assert ds.modality_lengths[0] > N_IMAGE_TOKENS and ds.modality_lengths[1] < 0


def test_truncation_leaves_room_for_image_tokens(tokenizer, folder):
    ds = make(tokenizer, folder, records(), max_length=N_IMAGE_TOKENS + 40)
    sample = ds[0]
    assert sample.truncated and len(sample.input_ids) + N_IMAGE_TOKENS - 1 == N_IMAGE_TOKENS + 40
    with pytest.raises(DataError, match="img-tag-last.*cut off <image>"):
        make(tokenizer, folder, records(), max_length=N_IMAGE_TOKENS + 5)[0]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "conversations": []}, "no 'conversations'"),
        ({"id": "x", "conversations": [{"from": "gpt", "value": "a"}]}, "expected 'user'"),
        ({"id": "x", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a"}]}, "no 'image'"),
        ({"id": "x", "image": "img/0.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "<image>"}]}, "exactly one <image>"),
        ({"id": "x", "conversations": [{"from": "human", "value": "q"}]}, "no answer"),
        ({"id": "x", "conversations": [{"from": "human"}]}, "needs 'from'"),
        ("not a record", "not an object"),
    ],
)  # fmt: skip
def test_malformed_record_is_named_or_skipped_and_counted(tokenizer, folder, record, message):
    recs = [*records(), record]
    with pytest.raises(DataError, match=rf"record #3.*{message}"):
        make(tokenizer, folder, recs)
    ds = make(tokenizer, folder, recs, on_error="skip")
    assert len(ds) == 3 and len(ds.malformed) == 1 and ds.malformed[0].startswith("record #3")


@pytest.mark.parametrize("image", ["img/missing.png", "img/broken.png"])
def test_bad_image_is_named_or_skipped(tokenizer, folder, image):
    recs = [{**records()[2], "id": "bad", "image": image}, *records()]
    ds = make(tokenizer, folder, recs)
    with pytest.raises(DataError, match=rf"record #0 \(id 'bad'\).*{Path(image).name}"):
        ds[0]
    skipping = make(tokenizer, folder, recs, on_error="skip")
    sample = skipping[0]  # the next good record stands in, and the bad one is reported
    assert sample.record_id == "img-tag-last" and sample.skipped == ["record #0 (id 'bad')"]


def test_images_above_the_pixel_limit_are_named_or_skipped(tokenizer, folder, bomb_png):
    recs = [{**records()[2], "id": "bomb", "image": str(bomb_png)}, *records()]
    with pytest.raises(DataError, match=r"id 'bomb'.*bomb.png is too large to decode"):
        make(tokenizer, folder, recs)[0]  # was a DecompressionBombError traceback
    assert make(tokenizer, folder, recs, on_error="skip")[0].skipped == ["record #0 (id 'bomb')"]
    small_limit = ConversationDataset(
        records(),
        folder,
        tokenizer,
        get_template("phi2"),
        ImageProcessor(64, max_pixels=1000),
        N_IMAGE_TOKENS,
        256,
    )
    with pytest.raises(DataError, match=r"0.png is 40x30 = 1,200 pixels, more than the limit of 1,000"):
        small_limit[0]


def boundary_tokenizer():
    """A BPE without pre-tokenizer whose token ``ASSISTANT: red`` straddles the context/answer boundary."""
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ :,.'?\n")
    specials = ["<|endoftext|>", "</s>", "<image>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(["ASSISTANT: red"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<image>"],
    )


def test_mismatched_record_is_masked_and_reported(folder):
    recs = [
        {"id": "odd", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "red"}]},
        {"id": "fine", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "blue"}]},
    ]
    ds = make(boundary_tokenizer(), folder, recs)
    odd, fine = ds[0], ds[1]
    assert odd.mismatch and all(lab == IGNORE_INDEX for lab in odd.labels)
    assert not fine.mismatch and any(lab != IGNORE_INDEX for lab in fine.labels)
    batch = DataCollator(pad_token_id=0, image_size=64)([odd, fine])
    assert batch["report"].mismatch == ["odd"]


def test_collator_pads_right_and_stacks_images(tokenizer, folder):
    ds = make(tokenizer, folder, records())
    batch = DataCollator(pad_token_id=0, image_size=64)([ds[0], ds[1], ds[2]])
    lengths = [len(ds[i].input_ids) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, lengths[short] :] == IGNORE_INDEX).all()
    text_only = DataCollator(pad_token_id=0, image_size=64)([ds[1]])
    assert text_only["pixel_values"].shape == (0, 3, 64, 64)


def test_modality_grouped_sampler_never_mixes_and_is_deterministic():
    rng = np.random.default_rng(0)
    lengths = [int(n) if rng.random() < 0.7 else -int(n) for n in rng.integers(5, 200, size=203)]
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=4, world_size=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    per_step = 8
    full = len(order) // per_step * per_step
    mixed_tail = order[full - per_step :]  # LLaVA puts the mixed remainder last
    for start in range(0, full - per_step, per_step):
        for device in range(2):
            batch = order[start + 4 * device : start + 4 * device + 4]
            assert len({lengths[i] > 0 for i in batch}) == 1, batch
    assert mixed_tail
    assert list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=1)) == order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_read_records_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.json"):
        read_records(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        read_records(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(DataError, match="JSON list"):
        read_records(tmp_path / "obj.json")
    lines = tmp_path / "r.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records()))
    assert len(read_records(lines)) == 3


def test_collated_batch_runs_through_the_model(tokenizer, folder):
    from impvlm import ImpForCausalLM, build_config

    ds = make(tokenizer, folder, records())
    torch.manual_seed(0)
    model = ImpForCausalLM(
        build_config("imp-tiny", image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    )
    batch = DataCollator(0, 64)([ds[i] for i in range(3)])
    batch.pop("report")
    out = model(**batch)
    assert torch.isfinite(out.loss)
