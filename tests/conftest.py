import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory):
    """A small synthetic shapes dataset and its tokenizer."""
    from impvlm.data.synthetic import WorldConfig, generate_dataset
    from impvlm.tokenizer import build_corpus, train_tokenizer

    root = tmp_path_factory.mktemp("world")
    paths = generate_dataset(root, 200, 20, WorldConfig(seed=0), progress=False)
    tokenizer = train_tokenizer(build_corpus(root), 1024, root / "tokenizer")
    return paths, tokenizer


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory, synthetic_world):
    """``make(seed, name)``: save a tiny random-init Imp checkpoint (torch seeded with ``seed``, the
    synthetic tokenizer) in a new folder named after ``name``; returns its path."""

    def make(seed: int, name: str):
        import torch

        from impvlm import ImpForCausalLM, build_config
        from impvlm.checkpoint import save_checkpoint

        _, tokenizer = synthetic_world
        torch.manual_seed(seed)
        model = ImpForCausalLM(build_config("imp-tiny", tokenizer=tokenizer)).eval()
        return save_checkpoint(model, tokenizer, tmp_path_factory.mktemp(name) / "tiny")

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_tiny_checkpoint):
    """A tiny random-init Imp checkpoint (with the synthetic tokenizer) on disk."""
    return make_tiny_checkpoint(0, "ckpt")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Every published upstream layout, written as upstream's code writes them (tests/upstream_layouts.py)."""
    from upstream_layouts import build_layouts

    return build_layouts(tmp_path_factory.mktemp("upstream"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint exported: GGUF f32 / f16 / q8_0 / q4_k_m, ONNX fp32 / fp16 / int8."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_checkpoint, out, gguf=["f32", "f16", "q8_0", "q4_k_m"], onnx=["fp32", "fp16", "int8"])
    return out


def write_one_colour_png(path, width: int, height: int):
    """A valid black 1-bit PNG of any size that stays a few kB on disk (decompression-bomb tests):
    rows are streamed through zlib, never held in memory whole."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def one_colour_png():
    """``one_colour_png(path, width, height)`` writes a tiny PNG file of any size."""
    return write_one_colour_png


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory):
    """A 20000x20000 (400-megapixel) one-colour PNG of a few kB."""
    return write_one_colour_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 20_000, 20_000)
