"""The vision tower + projector as ONNX: real ONNX Runtime against PyTorch on tiny models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.errors import ExportError
from export.kinds.vision import export_vision_encoder
from export.onnx_vision import (
    FILENAMES,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_THRESHOLDS,
    ParityThreshold,
    VisionEncoder,
    parity_images,
    token_cosines,
)
from impvlm import ImpForCausalLM, build_config

PRESETS = ["imp-tiny", "llava-phi-tiny"]


def tiny(preset: str) -> ImpForCausalLM:
    torch.manual_seed(0)
    return ImpForCausalLM(build_config(preset)).eval()


@pytest.fixture(scope="module", params=PRESETS)
def exported(request, tmp_path_factory):
    model = tiny(request.param)
    out = tmp_path_factory.mktemp(f"onnx-{request.param}")
    return model, export_vision_encoder(model, out, ["fp32", "fp16", "int8"])


def run(path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


def test_files_names_and_dynamic_batch(exported):
    model, artifacts = exported
    cfg = model.config
    assert list(artifacts) == ["fp32", "fp16", "int8"]
    for precision, artifact in artifacts.items():
        assert artifact.path.name == FILENAMES[precision]
        assert artifact.files == [artifact.path]  # one file: no external data below the limit
        graph = onnx.load(str(artifact.path)).graph
        (inp,), (out,) = graph.input, graph.output
        assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
        in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert isinstance(in_dims[0], str) and in_dims[1:] == [3, cfg.image_size, cfg.image_size]
        assert out_dims[0] == in_dims[0] and out_dims[1:] == [cfg.num_image_tokens, cfg.hidden_size]
        # float32 I/O at every precision
        assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_matches_pytorch_at_any_batch(exported, batch):
    model, artifacts = exported
    pixels = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model.encode_images(pixels).numpy()
    out = run(artifacts["fp32"].path, pixels.numpy())
    assert out.shape == ref.shape == (batch, model.config.num_image_tokens, model.config.hidden_size)
    assert token_cosines(out, ref).min() >= 0.99999
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_parity_reports_per_precision(exported, record_property):
    _, artifacts = exported
    for precision, artifact in artifacts.items():
        report = artifact.parity
        assert report is not None and report.passed, precision
        assert report.threshold == PARITY_THRESHOLDS[precision]
        assert report.n_images == 6 and report.batch_sizes == [6, 1]
        record_property(f"{precision}_min_cos", report.min_cos)
        record_property(f"{precision}_max_abs_err", report.max_abs_err)
    fp32, fp16, int8 = (artifacts[p].parity for p in ("fp32", "fp16", "int8"))
    assert fp32.min_cos >= 0.99999 and fp32.max_abs_err < 1e-5
    assert int8.max_abs_err > fp16.max_abs_err > fp32.max_abs_err  # precision costs what it should
    assert artifacts["int8"].path.stat().st_size < artifacts["fp16"].path.stat().st_size
    assert artifacts["fp16"].path.stat().st_size < artifacts["fp32"].path.stat().st_size


def test_wrapper_is_encode_images_and_holds_no_lm_weights():
    model = tiny("llava-phi-tiny")
    encoder = VisionEncoder.from_model(model)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder(pixels), model.encode_images(pixels))
    assert not any(name.startswith(("model.", "lm_head")) for name, _ in encoder.named_parameters())
    assert encoder.weight_bytes() < sum(p.numel() for p in model.parameters()) * 4


def test_parity_images_are_real_and_random():
    cfg = build_config("imp-tiny")
    images = parity_images(cfg, n_synthetic=3, n_random=2)
    assert images.shape == (5, 3, 64, 64) and images.dtype == np.float32
    assert np.abs(images[:4]).max() <= 1.0 + 1e-6  # processed images live in [-1, 1] (mean = std = .5)
    assert np.abs(images[4]).max() > 1.0  # the standard-normal one does not


def test_external_data_above_the_size_limit(tmp_path):
    model = tiny("imp-tiny")
    artifacts = export_vision_encoder(model, tmp_path, ["fp32", "int8"], single_file_limit=1)
    fp32 = artifacts["fp32"]
    assert len(fp32.files) == 2 and fp32.files[1].is_file() and fp32.details["external_data"]
    assert fp32.path.stat().st_size < fp32.files[1].stat().st_size  # the weights live outside
    assert fp32.parity is not None and fp32.parity.min_cos >= 0.99999
    assert artifacts["int8"].parity is not None and artifacts["int8"].parity.passed


def test_optimized_graph_stays_exact(tmp_path):
    """ORT's optimizer would turn the tanh GELU into an erf BiasGelu; it must not here."""
    model = tiny("imp-tiny")
    artifacts = export_vision_encoder(model, tmp_path, ["fp32"], optimize=True)
    ops = {n.op_type for n in onnx.load(str(artifacts["fp32"].path)).graph.node}
    assert "SkipLayerNormalization" in ops  # it did optimise
    assert "BiasGelu" not in ops and "FastGelu" not in ops
    assert artifacts["fp32"].optimized and artifacts["fp32"].parity.min_cos >= 0.99999


def test_failed_parity_raises_and_removes_the_files(tmp_path):
    model = tiny("imp-tiny")
    impossible = {"int8": ParityThreshold(min_cos=1.1, mean_cos=1.1)}
    with pytest.raises(
        ExportError, match=r"vision_encoder_q8\.onnx \(int8\) does not match PyTorch: cos min"
    ):
        export_vision_encoder(model, tmp_path, ["fp32", "int8"], thresholds=impossible)
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_is_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="unknown ONNX precision 'int4'"):
        export_vision_encoder(tiny("imp-tiny"), tmp_path, ["fp32", "int4"])


@pytest.mark.slow
def test_real_size_imp_v1_3b_vision_encoder(tmp_path):
    """SigLIP-so400m (26 layers) + mlp2x_gelu projector at 384 px, random weights: one fp32 file."""
    config = build_config("imp-v1-3b")
    torch.manual_seed(0)
    encoder = VisionEncoder.from_config(config)
    assert 1.5e9 < encoder.weight_bytes() < 1.9e9
    images = parity_images(config, n_synthetic=2, n_random=1)
    artifacts = export_vision_encoder(encoder, tmp_path, ["fp32"], images=images)
    fp32 = artifacts["fp32"]
    assert fp32.files == [tmp_path / "vision_encoder.onnx"]
    assert 1.5e9 < fp32.path.stat().st_size < 2**31
    assert fp32.parity is not None and fp32.parity.min_cos >= 0.99999
    out = run(fp32.path, images[:1])
    assert out.shape == (1, 729, 2560)


def test_int8_weights_are_uint8_on_every_cpu_kind(exported):
    """U8U8: every quantized MatMul takes uint8 weights, which no CPU kernel accumulates in a saturating
    int16 (int8 weights do on AVX2 and AVX-512 without VNNI); the manifest records the scheme."""
    _, artifacts = exported
    int8 = artifacts["int8"]
    graph = onnx.load(str(int8.path)).graph
    weights = {init.name: init.data_type for init in graph.initializer}
    quantized = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert quantized, "no quantized MatMul in the int8 graph"
    for node in quantized:
        assert weights[node.input[1]] == onnx.TensorProto.UINT8, node.name
    assert int8.details["weight_type"] == "QUInt8" and int8.details["activation_type"] == "QUInt8"
