"""The synthetic shapes world: scenes, rendering, questions, balance and the dataset files."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from impdefs import SHORT_ANSWER_TAIL as SHORT_ANSWER_SUFFIX  # the question's last line, with its break
from impvlm.data.synthetic import (
    KINDS,
    PALETTE,
    POSITION_PHRASES,
    QA,
    SLOTS,
    Renderer,
    Scene,
    WorldConfig,
    applicable_kinds,
    ask,
    caption,
    generate_dataset,
    instruct_turns,
    render,
    sample_scene,
)
from impvlm.errors import ConfigError

CFG = WorldConfig()


def scenes(n: int, seed: int = 0, cfg: WorldConfig = CFG) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, cfg) for _ in range(n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "a"
    generate_dataset(out, 120, 30, WorldConfig(seed=3), progress=False)
    return out


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"colours": ("red", "magenta")},
        {"shapes": ("circle", "circle")},
        {"positions": ("left", "centre")},
        {"max_objects": 5},
        {"min_objects": 0},
        {"words": ("Cat",)},
        {"ocr_fraction": 1.0},
        {"object_scale": 0.6},
        {"image_size": 8},
    ],
)
def test_bad_config_is_a_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="WorldConfig"):
        WorldConfig(**kwargs)


# ------------------------------------------------------------------------------------------ scenes


def test_scene_invariants() -> None:
    all_scenes = scenes(2000)
    signs = [s for s in all_scenes if s.is_sign]
    assert 0.15 < len(signs) / len(all_scenes) < 0.25
    for s in signs:
        assert s.objects == () and s.word in CFG.words and s.word_colour in CFG.colours
    for s in all_scenes:
        if s.is_sign:
            continue
        assert CFG.min_objects <= len(s.objects) <= CFG.max_objects
        assert len({o.position for o in s.objects}) == len(s.objects)
        assert len({(o.colour, o.shape) for o in s.objects}) == len(s.objects)
        assert [o.position for o in s.objects] == sorted(
            (o.position for o in s.objects), key=CFG.positions.index
        )


def test_sampling_is_deterministic() -> None:
    assert scenes(50, seed=7) == scenes(50, seed=7)
    assert scenes(50, seed=7) != scenes(50, seed=8)


def test_caption_wording() -> None:
    by_n = {len(s.objects): s for s in scenes(300) if not s.is_sign}
    for n, scene in by_n.items():
        text = caption(scene)
        assert text.endswith(".") and text == text.lower()
        for o in scene.objects:
            assert f"{o.colour} {o.shape}" in text
        assert text.count(" and ") == (n > 1)
    sign = next(s for s in scenes(100) if s.is_sign)
    assert caption(sign) == f'the word "{sign.word}" written in {sign.word_colour}.'


# --------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [64, 224])
def test_render_draws_each_object_in_its_colour(size: int) -> None:
    renderer = Renderer(CFG, size)
    for scene in scenes(40):
        img = renderer(scene)
        assert img.size == (size, size) and img.mode == "RGB"
        assert img.getpixel((0, 0)) == CFG.background
        for o in scene.objects:
            fx, fy = SLOTS[o.position]
            centre = (int((fx + o.dx) * size), int((fy + o.dy) * size))
            assert img.getpixel(centre) == PALETTE[o.colour]


def test_render_sign_uses_the_word_colour() -> None:
    sign = next(s for s in scenes(100) if s.is_sign)
    pixels = Counter(render(sign, CFG).getdata())
    assert pixels[PALETTE[sign.word_colour]] > 20  # legible strokes, not a few anti-aliased dots
    assert render(sign, CFG).tobytes() == render(sign, CFG).tobytes()


# --------------------------------------------------------------------------------------- questions


def test_open_answers_match_the_scene() -> None:
    rng = np.random.default_rng(1)
    for scene in scenes(500):
        for kind in applicable_kinds(scene):
            qa = ask(scene, kind, rng, CFG)
            assert isinstance(qa, QA) and qa.kind == kind
            assert qa.answer == qa.answer.lower() and " " not in qa.answer and qa.answer
            assert qa.question.endswith("?")
            if kind == "count":
                assert qa.answer == str(len(scene.objects))
            elif kind == "ocr":
                assert qa.answer == scene.word
            elif kind == "colour":
                assert qa.answer in ({o.colour for o in scene.objects} | {scene.word_colour})
            elif kind == "shape":
                assert qa.answer in {o.shape for o in scene.objects}
            elif kind == "position":
                assert scene.at(qa.answer) is not None
            else:
                assert qa.answer in ("yes", "no")


def test_position_questions_name_a_unique_object() -> None:
    rng = np.random.default_rng(2)
    for scene in (s for s in scenes(400) if not s.is_sign):
        qa = ask(scene, "position", rng, CFG)
        matches = [o for o in scene.objects if f" {o.colour} {o.shape}?" in qa.question]
        matches = matches or [
            o for o in scene.objects if f" {o.shape}?" in qa.question or f" {o.colour} shape?" in qa.question
        ]
        assert [o.position for o in matches] == [qa.answer]


@pytest.mark.parametrize("polarity", [True, False])
def test_verification_and_exists_follow_the_polarity(polarity: bool) -> None:
    rng = np.random.default_rng(3)
    want = "yes" if polarity else "no"
    for scene in scenes(300):
        for kind in applicable_kinds(scene):
            assert ask(scene, kind, rng, CFG, polarity).answer == want


def test_exists_answers_are_true() -> None:
    rng = np.random.default_rng(4)
    for scene in (s for s in scenes(300) if not s.is_sign):
        for polarity in (True, False):
            q = ask(scene, "exists", rng, CFG, polarity).question
            present = any(
                f"{o.colour} {o.shape}?" in q or f" {o.shape} in" in q or f" {o.colour} shape?" in q
                for o in scene.objects
            )
            assert present == polarity, q


def test_kind_that_does_not_apply_raises() -> None:
    sign = next(s for s in scenes(100) if s.is_sign)
    with pytest.raises(ConfigError, match="does not apply"):
        ask(sign, "shape", np.random.default_rng(0), CFG)
    assert set(KINDS) == set(applicable_kinds(sign)) | set(
        applicable_kinds(Scene(objects=scenes(1)[0].objects))
    )


def test_asking_about_a_given_object() -> None:
    rng = np.random.default_rng(4)
    scene = next(s for s in scenes(200, seed=4) if len(s.objects) == 3)
    for obj in scene.objects:
        assert ask(scene, "colour", rng, CFG, obj=obj).answer == obj.colour
        assert ask(scene, "shape", rng, CFG, obj=obj).answer == obj.shape
        assert ask(scene, "position", rng, CFG, obj=obj).answer == obj.position
        assert ask(scene, "position", rng, CFG, polarity=True, obj=obj).question.startswith(
            f"Is the {obj.colour} {obj.shape} "
        )
    with pytest.raises(ConfigError, match="cannot be about"):
        ask(scene, "count", rng, CFG, obj=scene.objects[0])
    other = next(o for s in scenes(200, seed=5) for o in s.objects if o not in scene.objects)
    with pytest.raises(ConfigError, match="cannot be about"):
        ask(scene, "colour", rng, CFG, obj=other)


def test_no_instruct_turn_is_answered_by_an_earlier_turn() -> None:
    # a turn that names an object (by its slot in a colour / shape question, or by answering a position
    # question) is about an object no earlier turn named, so its slot is not in the earlier text
    rng = np.random.default_rng(6)
    n_turns = Counter()
    for scene in scenes(3000, seed=6):
        turns = instruct_turns(scene, rng, CFG)
        n_turns[len(turns)] += 1
        assert len({qa.kind for qa in turns}) == len(turns)
        named: set[str] = set()
        for qa in turns:
            if scene.is_sign:
                continue
            if qa.kind == "position" and qa.answer in CFG.positions:
                slots = {qa.answer}
            elif qa.kind in ("colour", "shape"):
                slots = {p for p in CFG.positions if POSITION_PHRASES[p] in qa.question}
            else:
                continue
            assert not slots & named, (scene, turns)
            named |= slots
    assert set(n_turns) == {2, 3, 4}, n_turns


def test_answers_are_balanced_and_not_guessable_from_the_question() -> None:
    rng = np.random.default_rng(5)
    qas = [ask(s, k, rng, CFG) for s in scenes(6000, seed=5) for k in applicable_kinds(s)]
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for qa in qas:
        by_kind[qa.kind][qa.answer] += 1
    for kind, counts in by_kind.items():
        values = [v for a, v in counts.items() if not (kind == "count" and a == "0")]  # 0: sign scenes only
        expected = sum(values) / len(values)
        assert all(abs(v - expected) < 4 * expected**0.5 for v in values), (kind, counts)  # uniform, ~4 sigma
    assert set(by_kind["exists"]) == {"yes", "no"}
    # a "model" that only reads the question: its best answer per question text, scored on fresh data
    train, test = qas[: len(qas) // 2], qas[len(qas) // 2 :]
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for qa in train:
        table[qa.question][qa.answer] += 1
    hits = Counter(
        qa.kind for qa in test if table[qa.question] and table[qa.question].most_common(1)[0][0] == qa.answer
    )
    totals = Counter(qa.kind for qa in test)
    chance = {"colour": 0.25, "shape": 0.25, "position": 0.25, "count": 0.25, "exists": 0.5, "ocr": 0.125}
    for kind, total in totals.items():
        assert hits[kind] / total < chance[kind] + 0.1, (kind, hits[kind] / total)


# ----------------------------------------------------------------------------------------- dataset


def test_dataset_layout_and_records(dataset: Path) -> None:
    pretrain = json.loads((dataset / "pretrain.json").read_text())
    instruct = json.loads((dataset / "instruct.json").read_text())
    evals = json.loads((dataset / "eval.json").read_text())
    world = json.loads((dataset / "world.json").read_text())
    assert len(list((dataset / "images").glob("train_*.png"))) == 120
    assert len(list((dataset / "images").glob("eval_*.png"))) == 30
    assert len(pretrain) == 120
    for rec in pretrain:
        human, gpt = rec["conversations"]
        assert (dataset / rec["image"]).is_file()
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and gpt["value"].endswith(".")
    with_image = [r for r in instruct if "image" in r]
    text_only = [r for r in instruct if "image" not in r]
    assert len(with_image) == 120 and text_only
    for rec in with_image:
        conv = rec["conversations"]
        assert 2 <= len(conv) // 2 <= 4 and len(conv) % 2 == 0
        assert conv[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in conv) == 1
        for human, gpt in zip(conv[::2], conv[1::2]):
            assert human["from"] == "human" and human["value"].endswith(SHORT_ANSWER_SUFFIX)
            assert gpt["from"] == "gpt" and " " not in gpt["value"]
    assert all("<image>" not in t["value"] for r in text_only for t in r["conversations"])
    for rec in evals:
        assert set(rec) == {"id", "image", "question", "prompt", "answer", "kind"}
        assert rec["kind"] in KINDS and rec["prompt"] == rec["question"] + SHORT_ANSWER_SUFFIX
        assert rec["image"].startswith("images/eval_")
    assert len({r["id"] for r in evals}) == len(evals)
    assert world["config"]["seed"] == 3 and world["counts"]["eval_records"] == len(evals)
    assert (
        WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in world["config"].items()}).seed
        == 3
    )


def test_same_seed_gives_byte_identical_files(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path / "b", 120, 30, WorldConfig(seed=3), progress=False)
    files_a = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (dataset / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    generate_dataset(tmp_path / "c", 120, 30, WorldConfig(seed=4), progress=False)
    assert (tmp_path / "c" / "instruct.json").read_bytes() != (dataset / "instruct.json").read_bytes()


def test_generate_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, 0, 10, CFG, progress=False)


def test_synth_command_writes_dataset_and_tokenizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from impvlm.commands import synth

    parser = argparse.ArgumentParser()
    synth.configure(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path), "--train-images", "40", "--eval-images", "5", "--no-progress"]
    )
    assert synth.run(args) == 0
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file() and (tmp_path / "world.json").is_file()
    assert "tokenizer:" in capsys.readouterr().out


def test_synth_out_under_a_regular_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from impvlm.cli import main

    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "world"):
        assert (
            main(["synth", "--out", str(out), "--train-images", "2", "--eval-images", "1", "--no-progress"])
            == 2
        )
        err = capsys.readouterr().err
        assert f"--out {out}:" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file").read_text() == "not a folder"
