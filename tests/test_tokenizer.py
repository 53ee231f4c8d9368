"""The byte-level BPE tokenizer: training on the synthetic world, saving, loading, special tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from impvlm.data.synthetic import WorldConfig, generate_dataset
from impvlm.errors import CheckpointError, ConfigError, DataError
from impvlm.tokenizer import (
    ASSISTANT_ROLE,
    EOS_TOKEN,
    IMAGE_TOKEN,
    PAD_TOKEN,
    SYSTEM_PROMPT,
    build_corpus,
    load_tokenizer,
    train_tokenizer,
)

VOCAB = 512


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_dataset(out, 150, 10, WorldConfig(seed=1), progress=False)
    return out


@pytest.fixture(scope="module")
def tok_dir(dataset: Path) -> Path:
    train_tokenizer(build_corpus(dataset), VOCAB, dataset / "tokenizer")
    return dataset / "tokenizer"


@pytest.fixture(scope="module")
def tok(tok_dir: Path):
    return load_tokenizer(tok_dir)


def chat(question: str, answer: str) -> str:
    return f"{SYSTEM_PROMPT} USER: {IMAGE_TOKEN}\n{question} {ASSISTANT_ROLE} {answer}{EOS_TOKEN}"


def test_folder_has_hf_and_gguf_files(tok_dir: Path, tok) -> None:
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
    ):
        assert (tok_dir / name).is_file(), name
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    assert vocab == {k: v for k, v in tok.get_vocab().items()}
    merges = (tok_dir / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) > 1
    assert all(len(m.split(" ")) == 2 for m in merges[1:])


def test_vocab_size_and_special_tokens(tok) -> None:
    assert 3 + 256 < len(tok) <= VOCAB
    assert tok.convert_tokens_to_ids([PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN]) == [0, 1, 2]
    assert (tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token) == (PAD_TOKEN, EOS_TOKEN, None, None)
    for special in (PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN):
        assert tok(special, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(special)]


def test_image_token_is_one_id_in_context(tok) -> None:
    ids = tok(chat("What colour is the circle?", "red"), add_special_tokens=False)["input_ids"]
    assert ids.count(2) == 1 and ids[-1] == 1
    assert tok(f"{IMAGE_TOKEN}\nhi")["input_ids"][0] == 2


@pytest.mark.parametrize(
    "text",
    [
        "a red circle on the left and a blue cross at the top.",
        chat("How many shapes are there?\nAnswer the question using a single word or phrase.", "3"),
        "  leading spaces, UPPER case, digits 0123 and unicode: héllo ✓ 日本\n\ttabs",
        'the word "cat" written in red.',
    ],
)
def test_round_trip(tok, text: str) -> None:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_assistant_role_tokenizes_the_same_everywhere(tok) -> None:
    role = tok(f" {ASSISTANT_ROLE}", add_special_tokens=False)["input_ids"]
    assert len(role) <= 2  # learnt as a word: " ASSISTANT" + ":"
    for prefix in ("USER: hi", "USER: <image>\nWhat shape is at the top?", SYSTEM_PROMPT + " USER: x"):
        ids = tok(prefix + f" {ASSISTANT_ROLE}", add_special_tokens=False)["input_ids"]
        assert ids[-len(role) :] == role, prefix


def test_corpus_words_are_merged(tok) -> None:
    # the world's vocabulary is learnt: each common word is a single token
    for word in (" circle", " colour", " shape", " red", " ASSISTANT"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_train_is_deterministic(dataset: Path, tok_dir: Path, tmp_path: Path) -> None:
    train_tokenizer(build_corpus(dataset), VOCAB, tmp_path)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (tok_dir / name).read_bytes(), name


def test_too_small_vocab_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(["hello"], 100, tmp_path)


def test_build_corpus_needs_the_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pretrain\.json"):
        list(build_corpus(tmp_path))


def test_corpus_leaves_out_specials_and_eval(dataset: Path) -> None:
    texts = list(build_corpus(dataset))
    assert not any(t in text for text in texts for t in (IMAGE_TOKEN, EOS_TOKEN, PAD_TOKEN))
    eval_questions = {r["question"] for r in json.loads((dataset / "eval.json").read_text())}
    assert SYSTEM_PROMPT in texts and eval_questions  # eval.json is not a source (its questions may recur)


def test_gguf_special_vocab_reads_the_folder(tok_dir: Path, tok) -> None:
    gguf = pytest.importorskip("gguf")
    sv = gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=len(tok))
    assert sv.merges and sv.special_token_ids == {"eos": 1, "pad": 0}


def test_loads_a_phi2_style_folder(tok_dir: Path, tmp_path: Path) -> None:
    """Phi-2 ships vocab.json + merges.txt + added_tokens.json with a CodeGenTokenizer config."""
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    plain = {k: i for i, k in enumerate(k for k in vocab if k not in (PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN))}
    (tmp_path / "vocab.json").write_text(json.dumps(plain))
    shutil.copy(tok_dir / "merges.txt", tmp_path / "merges.txt")
    (tmp_path / "added_tokens.json").write_text(json.dumps({PAD_TOKEN: len(plain), "    ": len(plain) + 1}))
    (tmp_path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": PAD_TOKEN, "eos_token": PAD_TOKEN, "unk_token": PAD_TOKEN})
    )
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "CodeGenTokenizer", "add_prefix_space": False, "model_max_length": 2048}
        )
    )
    phi = load_tokenizer(tmp_path)
    assert phi.eos_token == PAD_TOKEN and phi.convert_tokens_to_ids(PAD_TOKEN) == len(plain)
    text = "What shape is on the left? ASSISTANT: circle"
    assert phi.decode(phi(text)["input_ids"]) == text
    # ...and once transformers has written its tokenizer.json, that loads too
    phi.save_pretrained(tmp_path / "resaved")
    assert load_tokenizer(tmp_path / "resaved")(text)["input_ids"] == phi(text)["input_ids"]


def test_unknown_tokenizer_class_falls_back_to_tokenizer_json(tok_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tok_dir, tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    (tmp_path / "t" / "tokenizer_config.json").write_text(
        json.dumps({**cfg, "tokenizer_class": "NoSuchTokenizer"})
    )
    assert load_tokenizer(tmp_path / "t").convert_tokens_to_ids(IMAGE_TOKEN) == 2


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt"])
def test_unreadable_folder_is_a_one_line_checkpoint_error(tok_dir: Path, tmp_path: Path, case: str) -> None:
    folder = tmp_path / "tok"
    if case == "empty":
        folder.mkdir()
    elif case == "corrupt":
        shutil.copytree(tok_dir, folder)
        (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
