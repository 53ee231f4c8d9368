"""The artifact-kind protocol: plan, write a base file, quantize from it, validate and gate, describe.

A kind (:class:`ArtifactKind`) turns one part of a model into runnable files of several precisions.
Its class-level half is used before anything is loaded: :meth:`~ArtifactKind.plan` checks the
precisions asked for (the one place that does), :meth:`~ArtifactKind.describe` renders a recorded
validation in one line. Its instance half is bound to one model and implements four steps, which
:meth:`~ArtifactKind.export` runs in the same order for every kind:

1. :meth:`~ArtifactKind.write_base` the base precision (into a scratch folder when it was not asked
   for itself, removed afterwards);
2. :meth:`~ArtifactKind.quantize` every other precision from that base;
3. :meth:`~ArtifactKind.reference` once (what PyTorch computes), then
   :meth:`~ArtifactKind.check` each file against it, which records the validation and returns a
   :class:`Verdict`; a file that fails raises :class:`ExportError` and every file of the call is
   deleted.

:class:`GgufKind` adds what the two GGUF kinds share (the type table, the f32/f16 base, llama.cpp's
quantizer). :class:`BundleJob` is what a kind reads from the bundle being written.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from export.errors import ExportError
from export.quant_types import BASE_TYPES, QUANT_TYPES

log = logging.getLogger(__name__)


@dataclass
class ArtifactFile:
    """One runnable file a kind wrote, the files it consists of, and how it was checked."""

    precision: str
    path: Path
    files: list[Path]  # the file itself first, then its companions (ONNX external data, ...)
    export_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] | None = None  # None: not validated
    validation_seconds: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a file passed its gate, and why not."""

    passed: bool
    reason: str


def judgement(gate: Any, problems: Sequence[str], **measured: Any) -> dict[str, Any]:
    """The ``verdict`` entry a validation records: passed, what was measured, the gate and the reason."""
    return {"passed": not problems, **measured, "gate": asdict(gate), "reason": "; ".join(problems) or "ok"}


@dataclass
class Timer:
    seconds: float = 0.0


class Steps:
    """The named, timed steps of one export: shown on a progress bar (optional), timings kept by key."""

    def __init__(self, bar: Any = None) -> None:
        self.bar = bar
        self.timings: dict[str, float] = {}

    def expect(self, n: int) -> None:
        """``n`` more steps will come."""
        if self.bar is not None:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    @contextlib.contextmanager
    def timed(self, timing_key: str | None = None) -> Iterator[Timer]:
        """Time the block (``timer.seconds`` after it), kept as ``timings[timing_key]`` when given."""
        timer, started = Timer(), time.perf_counter()
        yield timer
        timer.seconds = round(time.perf_counter() - started, 3)
        if timing_key:
            self.timings[timing_key] = timer.seconds

    @contextlib.contextmanager
    def step(self, desc: str, timing_key: str | None = None) -> Iterator[Timer]:
        """One step: shown on the bar, timed like :meth:`timed`, counted when done."""
        if self.bar is not None:
            self.bar.set_postfix_str(desc)
        log.debug("export: %s", desc)
        with self.timed(timing_key) as timer:
            yield timer
        if self.bar is not None:
            self.bar.update(1)


@dataclass
class BundleJob:
    """What a kind reads from the bundle being written (:mod:`export.bundle`)."""

    model: Any
    tokenizer: Any
    work: Path  # the bundle's work folder
    validate: bool
    steps: Steps
    threads: int | None = None
    prompts: Sequence[str] | None = None  # calibration prompts asked for (None: the defaults)
    optimize_onnx: bool = False
    imatrix: bool = False
    written: dict[str, dict[str, ArtifactFile]] = field(default_factory=dict)  # by kind section

    def rel(self, path: Path) -> str:
        """``path`` relative to the bundle, with ``/``."""
        return Path(path).relative_to(self.work).as_posix()


class ArtifactKind(ABC):
    """One kind of runnable file of a bundle; see the module docstring for the protocol."""

    section: ClassVar[str]  # the manifest section (and file-record kind) of its files
    keyword: ClassVar[str]  # ``export_bundle`` keyword and ``imp export --<keyword>`` option
    noun: ClassVar[str]  # what one precision is called in messages
    folder: ClassVar[str]  # bundle sub-folder of its files
    choices: ClassVar[tuple[str, ...]]  # every precision it writes, best first
    label: ClassVar[str]  # name of its steps on the progress bar
    calibration_key: ClassVar[str]  # its entry in the manifest's ``calibration`` section
    timing_key: ClassVar[str | None] = None  # manifest timing of the whole kind
    reference_timing_key: ClassVar[str | None] = None  # manifest timing of the PyTorch reference
    engine: ClassVar[str] = ""  # where a file that misses its gate ran, for the message
    #: (section, message): another kind the bundle must hold for this one.
    requires: ClassVar[tuple[str, str] | None] = None

    def __init__(self, steps: Steps | None = None) -> None:
        self.steps = steps or Steps()

    # ------------------------------------------------------------------ before anything is loaded
    @classmethod
    def plan(cls, asked: Sequence[str]) -> tuple[str, ...]:
        """The precisions asked for, normalised, without repeats, in order; ExportError names an
        unknown one."""
        wanted = tuple(dict.fromkeys(str(p).strip().lower() for p in asked if str(p).strip()))
        if unknown := [p for p in wanted if p not in cls.choices]:
            raise ExportError(f"unknown {cls.noun} {unknown[0]!r}; choose from {', '.join(cls.choices)}")
        return wanted

    @classmethod
    @abstractmethod
    def base_precision(cls, wanted: Sequence[str]) -> str:
        """The precision written directly; the others are quantized from it."""

    @classmethod
    @abstractmethod
    def filename(cls, precision: str) -> str:
        """The file name of a precision."""

    @classmethod
    def needs_llama_cpp(cls, wanted: Sequence[str], validate: bool) -> bool:
        return False

    @staticmethod
    @abstractmethod
    def describe(validation: dict[str, Any]) -> str:
        """One line for ``imp info`` / ``imp export`` of a validation this kind recorded."""

    # ------------------------------------------------------------------ bound to one model
    @abstractmethod
    def write_base(self, precision: str, path: Path) -> ArtifactFile:
        """Write the base precision to ``path``."""

    @abstractmethod
    def quantize(self, base: ArtifactFile, precision: str, path: Path) -> ArtifactFile:
        """Write ``precision`` to ``path``, derived from the base file."""

    def before_quantize(self, base: ArtifactFile, scratch: Path) -> None:
        """Called once before the first quantized precision, with a folder removed afterwards."""
        return None

    def reference(self) -> Any:
        """What PyTorch computes, shared by the checks of every file (None: nothing to share)."""
        return None

    @abstractmethod
    def check(self, file: ArtifactFile, reference: Any) -> Verdict:
        """Measure ``file`` against ``reference``, record it as ``file.validation``, judge it."""

    def n_steps(self, wanted: Sequence[str], validate: bool) -> int:
        """Progress steps of :meth:`export`: one per file written, the reference and each check."""
        written = len(wanted) + (0 if self.base_precision(wanted) in wanted else 1)
        return written + (1 + len(wanted) if validate else 0)

    def export(self, folder: Path, wanted: Sequence[str], validate: bool = True) -> dict[str, ArtifactFile]:
        """Write each of ``wanted`` (planned) into ``folder``, then validate and gate each file.

        Returns ``{precision: file}`` in the order asked; on any failure the files written are
        deleted.
        """
        if not wanted:
            raise ExportError(f"no {self.noun} asked for")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, ArtifactFile] = {}
        try:
            self._write(folder, wanted, files)
            if validate:
                self.validate(files)
        except BaseException:
            for file in files.values():
                for path in file.files:
                    path.unlink(missing_ok=True)
            raise
        return {p: files[p] for p in wanted}

    def validate(self, files: dict[str, ArtifactFile]) -> None:
        """:meth:`check` every file against one :meth:`reference`; raise on the first that fails."""
        with self.steps.step(f"{self.label} reference", self.reference_timing_key):
            reference = self.reference()
        for precision, file in files.items():
            with self.steps.step(f"validate {self.label} {precision}") as timer:
                verdict = self.check(file, reference)
            file.validation_seconds = timer.seconds
            if not verdict.passed:
                raise ExportError(
                    f"{file.path.name} ({precision}) does not match PyTorch{self.engine}: {verdict.reason}"
                )

    def _write(self, folder: Path, wanted: Sequence[str], files: dict[str, ArtifactFile]) -> None:
        base = self.base_precision(wanted)
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=folder) as scratch_dir:
            scratch = Path(scratch_dir)
            where = folder if base in wanted else scratch
            base_file = self._timed(base, lambda: self.write_base(base, where / self.filename(base)))
            if base in wanted:
                files[base] = base_file
            quantized = [p for p in wanted if p != base]
            if quantized:
                self.before_quantize(base_file, scratch)
            for precision in quantized:
                path = folder / self.filename(precision)
                files[precision] = self._timed(
                    precision, lambda p=precision, t=path: self.quantize(base_file, p, t)
                )

    def _timed(self, precision: str, write: Callable[[], ArtifactFile]) -> ArtifactFile:
        with self.steps.step(f"{self.label} {precision}") as timer:
            file = write()
        file.export_seconds = timer.seconds
        return file

    # ------------------------------------------------------------------ in a bundle
    @classmethod
    @abstractmethod
    def for_bundle(cls, job: BundleJob) -> ArtifactKind:
        """The kind bound to the bundle's model, with the bundle's options."""

    def calibration(self, job: BundleJob) -> dict[str, Any] | None:
        """What its checks ran on, for the manifest's ``calibration`` section (None: nothing)."""
        return None


class GgufKind(ArtifactKind):
    """A kind written as GGUF: any :data:`~export.quant_types.QUANT_TYPES` name, quantized by
    llama.cpp from an f32 base when ``f32`` is asked for, else from f16."""

    folder = "gguf"
    choices = tuple(QUANT_TYPES)

    def __init__(self, threads: int | None = None, steps: Steps | None = None) -> None:
        super().__init__(steps)
        self.threads = threads
        self.imatrix_path: Path | None = None  # an importance matrix the quantizer uses, if any

    @classmethod
    def base_precision(cls, wanted: Sequence[str]) -> str:
        return next((b for b in BASE_TYPES if b in wanted), "f16")

    @classmethod
    def needs_llama_cpp(cls, wanted: Sequence[str], validate: bool) -> bool:
        return validate or any(p != cls.base_precision(wanted) for p in wanted)

    def quantize(self, base: ArtifactFile, precision: str, path: Path) -> ArtifactFile:
        """llama.cpp's quantizer (per-tensor fallbacks where a block size does not divide a row)."""
        from export.quantize import quantize_gguf

        quantize_gguf(base.path, path, precision, imatrix=self.imatrix_path, threads=self.threads)
        return ArtifactFile(precision, path, [path], details={"quantized_from": base.precision})
