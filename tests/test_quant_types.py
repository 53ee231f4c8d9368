"""The quant-type table: one row per GGUF type, read by export, runtimes and compare."""

from __future__ import annotations

import gguf

from export.quant_types import (
    BASE_TYPES,
    ONNX_PRECISIONS,
    PREFERENCE,
    QUANT_TYPES,
    file_type_name,
    kv_type,
    lm_gate,
    mmproj_gate,
    near_lossless,
)


def test_every_row_names_a_real_llama_file_type() -> None:
    for name, row in QUANT_TYPES.items():
        assert row.name == name
        assert isinstance(row.file_type, gguf.LlamaFileType)
        assert file_type_name(int(row.file_type)) == name
    assert file_type_name(9999) == "ftype_9999"


def test_bases_preference_and_runtime_needs() -> None:
    assert BASE_TYPES == ("f32", "f16")
    assert PREFERENCE[:4] == ("f32", "f16", "bf16", "q8_0") and PREFERENCE[-1] == "q4_0"
    assert "q2_k" not in PREFERENCE and "iq4_xs" not in PREFERENCE
    assert kv_type("f32") == "f32" and kv_type("q4_k_m") == kv_type("f16") == "f16"


def test_gates_follow_bits_per_weight() -> None:
    assert lm_gate("Q4_K_M") == lm_gate("q4_0") == lm_gate("iq4_xs")
    assert lm_gate("ftype_99") == lm_gate("q2_k")  # unknown: the loosest gate
    assert mmproj_gate("q8_0").min_cos > mmproj_gate("q4_k_m").min_cos


def test_near_lossless_class() -> None:
    assert {n for n, q in QUANT_TYPES.items() if q.near_lossless} == {"f32", "f16", "bf16", "q8_0"}
    assert near_lossless("q8_0", None) and near_lossless("f16", "fp16")
    assert not near_lossless("q8_0", "int8") and not near_lossless("q4_k_m", "fp32")
    assert not near_lossless(None, "fp32")
    assert [p for p, ok in ONNX_PRECISIONS.items() if ok] == ["fp32", "fp16"]
