"""Run the ``imp`` command in-process, as the tests of whole commands do."""

from __future__ import annotations

import contextlib
import io

from impvlm.cli import main


def imp(*argv: object) -> tuple[int, str, str]:
    """Run the ``imp`` command in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()
