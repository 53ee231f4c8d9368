"""The loss log: every logged training loss appended to ``loss.jsonl`` in the run folder, read back to
resume a run (cut to its checkpoint) and to report the run's mean loss."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from impvlm.files import read_jsonl

log = logging.getLogger(__name__)

LOSS_LOG = "loss.jsonl"


class LossLog(TrainerCallback):
    """Appends every logged loss (step, loss, lr, grad norm, epoch, seconds) to ``loss.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = {"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate")}
        row.update({"grad_norm": logs.get("grad_norm"), "epoch": logs.get("epoch")})
        row["seconds"] = round(time.perf_counter() - self.started, 2)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def read_loss_log(path: Path) -> list[dict[str, Any]]:
    """The rows of ``loss.jsonl``; a torn last line (a kill while appending) is dropped, a bad line
    elsewhere is a :class:`DataError` naming it."""
    return read_jsonl(path, valid=_is_loss_row)


def _is_loss_row(row: dict[str, Any]) -> bool:
    step, loss = row.get("step"), row.get("loss")
    return isinstance(step, int) and isinstance(loss, int | float) and not isinstance(step, bool)


def truncate_loss_log(path: Path, last_step: int) -> None:
    """Keep the rows up to ``last_step`` (the checkpoint a resumed run restarts from)."""
    rows = [r for r in read_loss_log(path) if r["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def mean_loss(rows: list[dict[str, Any]]) -> float | None:
    """The run's mean training loss from its loss log: each logged loss (itself the mean since the
    previous log) weighted by the steps it covers. A resumed run reads the rows of before and after
    the resume, so it reports what the uninterrupted run reports."""
    total, steps, previous = 0.0, 0, 0
    for row in sorted(rows, key=lambda r: r["step"]):
        covered = row["step"] - previous
        total, steps, previous = total + row["loss"] * covered, steps + covered, row["step"]
    return total / steps if steps else None
