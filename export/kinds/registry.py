"""Every artifact kind, in the order a bundle writes them (the mmproj's checks run with the LM)."""

from __future__ import annotations

from export.kinds.base import ArtifactKind
from export.kinds.lm import GgufLM
from export.kinds.mmproj import Mmproj
from export.kinds.vision import OnnxVision

KINDS: tuple[type[ArtifactKind], ...] = (OnnxVision, GgufLM, Mmproj)


def kind_of(section: str) -> type[ArtifactKind]:
    """The kind whose files a manifest section holds (``vision``, ``lm``, ``mmproj``)."""
    for kind in KINDS:
        if kind.section == section:
            return kind
    raise KeyError(section)
