"""The stock-tools builder's own logic, without compiling (tests/test_stock_llamacpp.py builds)."""

from __future__ import annotations

import io
import tarfile

import pytest

from runtimes.stock_llama_cpp import (
    BUILD_RECORD,
    TOOLS,
    StockToolsError,
    _unpack_vendored_llama_cpp,
    build_stock_tools,
    built_tools,
    cache_folder,
    missing_toolchain,
)


def write_sdist(path, names):
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_the_vendored_llama_cpp_is_unpacked(tmp_path):
    sdist = write_sdist(
        tmp_path / "llama_cpp_python-9.9.9.tar.gz",
        [
            "llama_cpp_python-9.9.9/pyproject.toml",
            "llama_cpp_python-9.9.9/llama_cpp/llama.py",
            "llama_cpp_python-9.9.9/vendor/llama.cpp/CMakeLists.txt",
            "llama_cpp_python-9.9.9/vendor/llama.cpp/tools/mtmd/mtmd-cli.cpp",
        ],
    )
    out = _unpack_vendored_llama_cpp(sdist, tmp_path / "src")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["CMakeLists.txt", "tools/mtmd/mtmd-cli.cpp"]
    empty = write_sdist(tmp_path / "other.tar.gz", ["other-1.0/setup.py"])
    with pytest.raises(StockToolsError, match=r"other.tar.gz has no vendor/llama.cpp folder"):
        _unpack_vendored_llama_cpp(empty, tmp_path / "src2")


def test_cache_is_keyed_by_version_and_complete_only_with_its_record(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = cache_folder("9.9.9")
    assert folder == tmp_path / "impvlm" / "llama.cpp-9.9.9"
    (folder / "bin").mkdir(parents=True)
    for tool in TOOLS:
        (folder / "bin" / tool).write_text("#!/bin/sh\n")
        (folder / "bin" / tool).chmod(0o755)
    assert built_tools("9.9.9") is None  # binaries without build.json: an interrupted build
    (folder / BUILD_RECORD).write_text("{}")
    tools = built_tools("9.9.9")
    assert tools is not None and tools.server == folder / "bin" / "llama-server"
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake, no pip: the cached build is all it needs
    assert build_stock_tools("9.9.9") == tools


def test_missing_cmake_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_toolchain() == "cmake is not installed"
    with pytest.raises(StockToolsError, match="cannot build llama.cpp's tools: cmake is not installed"):
        build_stock_tools("9.9.9", root=tmp_path)
