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
def tiny_checkpoint(tmp_path_factory, synthetic_world):
    """A tiny random-init Imp checkpoint (with the synthetic tokenizer) on disk."""
    import torch

    from impvlm import ImpForCausalLM, build_config
    from impvlm.checkpoint import save_checkpoint

    _, tokenizer = synthetic_world
    torch.manual_seed(0)
    model = ImpForCausalLM(build_config("imp-tiny", tokenizer=tokenizer)).eval()
    return save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint exported: GGUF f32 / f16 / q8_0 / q4_k_m, ONNX fp32 / fp16 / int8."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_checkpoint, out, gguf=["f32", "f16", "q8_0", "q4_k_m"], onnx=["fp32", "fp16", "int8"])
    return out
