"""The one JSON path of the speed suite's typed records.

Every record is a frozen dataclass deriving from :class:`Record`: :meth:`Record.to_dict` gives the
JSON object (field names are the JSON keys, in field order) and :meth:`Record.from_dict` reads it
back, nested records, lists and mappings of records included; a plain dataclass of another package
(the bundle manifest's ``ModelInfo``) is written as its fields and read back by them. A field declared with
``field(default=None, metadata=OMIT_NONE)`` is left out of the JSON while it is None (a key only
some workers write).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Self

#: field metadata: leave the key out of the JSON while the value is None
OMIT_NONE = {"optional": True}


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the typed records: one to / from JSON path."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _dump(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (f.metadata.get("optional") and getattr(self, f.name) is None)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _load(hints[k], v) for k, v in data.items() if k in names})


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _load(hint: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` names."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _load(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        return [_load(args[0], v) for v in value]
    if origin is tuple:
        return tuple(_load(args[0], v) for v in value)
    if origin is dict:
        return {k: _load(args[1], v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint(**value)
    return value
