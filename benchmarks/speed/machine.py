"""Limits of the machine: what it is, how fast it moves memory, and what that allows per token.

Decode on a CPU reads every weight once per token, so ``tokens/s <= bandwidth / weight bytes``
(the roofline). :func:`memory_bandwidth` measures the bandwidth with a large-array copy (counted
as bytes read + bytes written, as STREAM's *copy* does) and :func:`gguf_decode_bytes` the bytes a
GGUF file makes llama.cpp read per token: every tensor but the token embeddings (a row lookup).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.speed.rows import Bandwidth, DecodeBytes, Machine

#: Tensors llama.cpp does not stream per decoded token (one row is gathered).
NOT_READ_PER_TOKEN = ("token_embd.weight",)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide which kernels llama.cpp / ONNX Runtime / PyTorch use."""
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "neon")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:  # pragma: no cover - not Linux
        pass
    return []


def machine_info() -> Machine:
    """CPU model, cores, memory, load and library versions, recorded with every figure."""
    from importlib import metadata

    import psutil

    from benchmarks.speed.config import usable_cores

    versions = {}
    for dist in ("torch", "transformers", "onnxruntime", "llama-cpp-python", "gguf", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    memory = psutil.virtual_memory()
    return Machine(
        cpu=cpu_model(),
        cpu_flags=cpu_flags(),
        cores_usable=usable_cores(),
        cores_logical=psutil.cpu_count(logical=True),
        cores_physical=psutil.cpu_count(logical=False),
        memory_gb=round(memory.total / 2**30, 1),
        memory_available_gb=round(memory.available / 2**30, 1),
        load_average=list(os.getloadavg()),
        platform=platform.platform(),
        python=platform.python_version(),
        versions=versions,
    )


def memory_bandwidth(size_mb: int, threads: int, repeats: int = 5) -> Bandwidth:
    """GB/s of a ``size_mb`` float32 array copy with ``threads`` threads (median of ``repeats``).

    Runs in the caller's process: call it in an isolated worker so the thread setting and the
    arrays do not outlive the measurement.
    """
    import torch

    torch.set_num_threads(threads)
    n = size_mb * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page first
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - started)
    moved = 2 * n * 4  # read + write
    best, median = min(seconds), statistics.median(seconds)
    return Bandwidth(
        threads=threads,
        array_mb=size_mb,
        gb_per_s=moved / median / 1e9,
        gb_per_s_best=moved / best / 1e9,
        seconds=seconds,
    )


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an ``n x n`` float32 matrix multiply and GOP/s of an int8 one (int32 sums) with
    ``threads`` threads, best of ``repeats`` each: the machine's measured compute peaks that a prefill
    rate is set against (float math for PyTorch fp32 and f16 GGUFs, integer dot products for llama.cpp's
    quantized types). Run it in an isolated worker, like :func:`memory_bandwidth`."""
    import torch

    torch.set_num_threads(threads)

    def best(mm, a: torch.Tensor, b: torch.Tensor) -> float:
        mm(a, b)  # warm-up
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            mm(a, b)
            seconds.append(time.perf_counter() - started)
        return 2 * n**3 / min(seconds) / 1e9

    out = {"threads": threads, "n": n, "gflops": best(torch.mm, torch.randn(n, n), torch.randn(n, n))}
    ints = [torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2)]
    try:
        out["int8_gops"] = best(torch._int_mm, *ints)
    except (RuntimeError, NotImplementedError) as exc:  # a torch build without a CPU int8 matmul
        out["int8_gops"], out["int8_error"] = None, str(exc).splitlines()[0]
    return out


def gguf_decode_bytes(path: str | Path) -> DecodeBytes:
    """Bytes llama.cpp reads per decoded token from a GGUF file, and the model facts behind them."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    total = per_token = elements = 0
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        size = int(tensor.n_bytes)
        total += size
        if tensor.name not in NOT_READ_PER_TOKEN:
            per_token += size
            elements += int(tensor.n_elements)
            types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + size
    arch = bytes(reader.fields[gguf.Keys.General.ARCHITECTURE].parts[-1]).decode()

    def scalar(key: str) -> int:
        return int(reader.fields[key.format(arch=arch)].parts[-1][0])

    n_params = sum(int(t.n_elements) for t in reader.tensors)
    return DecodeBytes(
        tensor_bytes=total,
        bytes_per_token=per_token,
        elements_per_token=elements,
        bytes_by_type=types,
        parameters=n_params,
        layers=scalar(gguf.Keys.LLM.BLOCK_COUNT),
        embedding_width=scalar(gguf.Keys.LLM.EMBEDDING_LENGTH),
    )


def kv_bytes_per_token(layers: int, width: int, positions: float, bytes_per_value: int = 2) -> float:
    """KV cache bytes attention reads for one new token at ``positions`` cached positions (f16 K and V)."""
    return 2 * layers * width * bytes_per_value * positions
