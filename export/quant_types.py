"""What each weight precision of a bundle means: one table that export, runtimes and compare read.

A GGUF type (LM or mmproj) is a :class:`QuantType` row of :data:`QUANT_TYPES`: its llama.cpp file
type, its bits per weight, whether it is near-lossless (held to the tight accuracy thresholds of
``imp compare``), the parity gates its file must pass at export, and what a runtime needs to run it.
ONNX vision precisions are the rows of :data:`ONNX_PRECISIONS`.

Every layer (export, runtimes, benchmarks) may import this module: it needs ``gguf`` only when a
file type is asked for, so ``imp compare`` runs without the export extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from gguf import LlamaFileType

G = TypeVar("G")


@dataclass(frozen=True)
class LMGate:
    """What a GGUF file must reach against PyTorch on the calibration prompts.

    ``max_rel_logit_error``: mean |logit error| over the mean per-position std of PyTorch's logits
    (scale-free, so it means the same on a flat random tiny model and on a trained one);
    ``max_mean_kl``: mean KL(PyTorch || llama.cpp) of the next-token distributions. Tokenization must
    match exactly. Top-1 and greedy agreement are recorded, not gated: near-ties flip under any
    quantization (on tiny random models almost every position is a near-tie).
    """

    max_rel_logit_error: float
    max_mean_kl: float


@dataclass(frozen=True)
class MmprojGate:
    """Lowest per-token cosine to PyTorch on the *same pixels* (llama.cpp's graph and file only)."""

    min_cos: float
    mean_cos: float


#: (minimum bits per weight, gate), best first. Measured on the tiny presets (relative error):
#: f32 0.0004, f16 0.0007, q8_0 0.015, q4_k_m 0.13, q4_0 0.16, q2_k 0.43; the gates leave ~2x room
#: and stay far below a wrong file (relative error ~1.4, KL >> 1 on a trained model).
LM_GATES: tuple[tuple[int, LMGate], ...] = (
    (16, LMGate(max_rel_logit_error=0.01, max_mean_kl=0.01)),
    (8, LMGate(max_rel_logit_error=0.05, max_mean_kl=0.02)),
    (5, LMGate(max_rel_logit_error=0.15, max_mean_kl=0.1)),
    (4, LMGate(max_rel_logit_error=0.3, max_mean_kl=0.3)),
    (0, LMGate(max_rel_logit_error=0.75, max_mean_kl=1.0)),
)
#: (minimum bits per weight, gate), best first. Measured on imp-tiny (mean cos): f32/f16 0.999999,
#: q8_0 0.9998, q6_k 0.9995, q5_0 0.994, q4_k_m 0.993, q4_0 0.983. A file that runs one layer too
#: few (the feature-layer trap) gives ~0.95 at f16; a wrong tensor layout far less.
MMPROJ_GATES: tuple[tuple[int, MmprojGate], ...] = (
    (16, MmprojGate(min_cos=0.99, mean_cos=0.999)),
    (8, MmprojGate(min_cos=0.98, mean_cos=0.998)),
    (5, MmprojGate(min_cos=0.95, mean_cos=0.99)),
    (4, MmprojGate(min_cos=0.9, mean_cos=0.97)),
    (0, MmprojGate(min_cos=0.8, mean_cos=0.9)),
)


@dataclass(frozen=True)
class AccuracyMargin:
    """How much benchmark accuracy a precision class may lose against the reference (``imp compare``).

    ``max_drop``: largest drop of a benchmark's headline, in percentage points; ``min_agreement``:
    lowest share of questions answered the same (same parsed answer), in percent (``None``: not held).
    """

    max_drop: float
    min_agreement: float | None = None


#: f16 / q8_0 LM with fp32 / fp16 vision: lose at most 0.2 pt with at least 99% of answers the same.
NEAR_LOSSLESS_MARGIN = AccuracyMargin(max_drop=0.2, min_agreement=99.0)
#: 4-6 bit LM or int8 vision: lose at most 1 pt.
QUANTIZED_MARGIN = AccuracyMargin(max_drop=1.0)


def accuracy_margin(near_lossless: bool) -> AccuracyMargin:
    """The margin of the near-lossless class, or of the quantized one."""
    return NEAR_LOSSLESS_MARGIN if near_lossless else QUANTIZED_MARGIN


@dataclass(frozen=True)
class QuantType:
    """One GGUF weight type, as llama.cpp's ``llama-quantize`` spells it (lower case).

    ``base``: written directly by the GGUF writers (every other type is quantized by llama.cpp from
    a base file). ``auto``: a runtime picks it on its own when no precision is asked for (the IQ
    and 2-3 bit types are loaded only by name). ``kv_type``: the KV cache a runtime pairs with it.
    """

    name: str
    ggml_file_type: str  # the ``gguf.LlamaFileType`` member written as ``general.file_type``
    bits: int
    base: bool = False
    auto: bool = True
    kv_type: str = "f16"

    @property
    def file_type(self) -> LlamaFileType:
        from gguf import LlamaFileType

        return LlamaFileType[self.ggml_file_type]

    @property
    def integer_dot(self) -> bool:
        """llama.cpp's CPU kernels multiply its blocks with 8-bit quantized activations in integer dot
        products (every block-quantized type); the float types (f32, f16, bf16) run float math."""
        return not self.base

    @property
    def near_lossless(self) -> bool:
        """Held to the near-lossless accuracy thresholds (8 bits and up)."""
        return self.bits >= 8

    @property
    def margin(self) -> AccuracyMargin:
        """The benchmark accuracy this type may lose (:func:`accuracy_margin` of its class)."""
        return accuracy_margin(self.near_lossless)


def _tier(tiers: tuple[tuple[int, G], ...], bits: int) -> G:
    return next(gate for minimum, gate in tiers if bits >= minimum)


#: Every GGUF type the project writes, best first (the order runtimes prefer them in).
#: Types that require an importance matrix (IQ1/IQ2/IQ3_XXS, Q2_K_S) are not offered.
QUANT_TYPES: dict[str, QuantType] = {
    q.name: q
    for q in (
        QuantType("f32", "ALL_F32", 32, base=True, kv_type="f32"),
        QuantType("f16", "MOSTLY_F16", 16, base=True),
        QuantType("bf16", "MOSTLY_BF16", 16),
        QuantType("q8_0", "MOSTLY_Q8_0", 8),
        QuantType("q6_k", "MOSTLY_Q6_K", 6),
        QuantType("q5_k_m", "MOSTLY_Q5_K_M", 5),
        QuantType("q5_k_s", "MOSTLY_Q5_K_S", 5),
        QuantType("q5_1", "MOSTLY_Q5_1", 5),
        QuantType("q5_0", "MOSTLY_Q5_0", 5),
        QuantType("q4_k_m", "MOSTLY_Q4_K_M", 4),
        QuantType("q4_k_s", "MOSTLY_Q4_K_S", 4),
        QuantType("q4_1", "MOSTLY_Q4_1", 4),
        QuantType("q4_0", "MOSTLY_Q4_0", 4),
        QuantType("iq4_xs", "MOSTLY_IQ4_XS", 4, auto=False),
        QuantType("iq4_nl", "MOSTLY_IQ4_NL", 4, auto=False),
        QuantType("q3_k_l", "MOSTLY_Q3_K_L", 3, auto=False),
        QuantType("q3_k_m", "MOSTLY_Q3_K_M", 3, auto=False),
        QuantType("q3_k_s", "MOSTLY_Q3_K_S", 3, auto=False),
        QuantType("q2_k", "MOSTLY_Q2_K", 2, auto=False),
    )
}

#: Types the GGUF writers produce directly.
BASE_TYPES: tuple[str, ...] = tuple(name for name, q in QUANT_TYPES.items() if q.base)
#: What a runtime loads when no precision is asked for, best first.
PREFERENCE: tuple[str, ...] = tuple(name for name, q in QUANT_TYPES.items() if q.auto)

#: ONNX vision precisions (onnx-community names) -> near-lossless, best first.
ONNX_PRECISIONS: dict[str, bool] = {"fp32": True, "fp16": True, "int8": False}


def quant_type(name: str) -> QuantType | None:
    """The row of a type name (case-insensitive), or None."""
    return QUANT_TYPES.get(str(name).strip().lower())


def quant_bits(name: str) -> int:
    """Bits per weight of a type name; 0 for a name not in the table (held to the loosest gates)."""
    row = quant_type(name)
    return row.bits if row is not None else 0


def lm_gate(name: str) -> LMGate:
    """The LM parity gate of a GGUF type name (``q4_k_m`` -> the 4-bit gate)."""
    return _tier(LM_GATES, quant_bits(name))


def mmproj_gate(name: str) -> MmprojGate:
    """The mmproj parity gate of a GGUF type name."""
    return _tier(MMPROJ_GATES, quant_bits(name))


def kv_type(name: str) -> str:
    """The KV-cache type a runtime pairs with an LM of this type (f32 for f32, else f16)."""
    row = quant_type(name)
    return row.kv_type if row is not None else "f16"


def near_lossless(lm: str | None, vision: str | None) -> bool:
    """Whether an LM type and an ONNX vision precision (None: none) are both near-lossless."""
    row = quant_type(lm) if lm is not None else None
    return row is not None and row.near_lossless and (vision is None or ONNX_PRECISIONS.get(vision, False))


def file_type_name(file_type: int) -> str:
    """The table name of a ``general.file_type`` value (``"ftype_<n>"`` if not listed)."""
    for name, row in QUANT_TYPES.items():
        if int(row.file_type) == int(file_type):
            return name
    return f"ftype_{int(file_type)}"
