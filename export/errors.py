"""Errors of the export layer."""

from __future__ import annotations

from impvlm.errors import ImpError


class ExportError(ImpError):
    """A model, tokenizer, file or option the exporters cannot handle (one line naming it)."""
