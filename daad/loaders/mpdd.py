"""MPDD (Metal Parts Defect Detection): six categories of painted and bare metal parts.

Published in the MVTec AD layout: ``<category>/train/good``, ``<category>/test/<type>``,
``<category>/ground_truth/<type>/NNN_mask.png``. Native labels ``<category>/<type>``
(``bracket_black/hole``, ``metal_plate/major_rust`` ...); part mismatches are unmapped.

License:
    CC BY-NC-SA 4.0 (https://github.com/stepanje/MPDD); not for commercial use.

Reference:
    Jezek, S., Jonak, M., Burget, R., Dvorak, P., Skotak, M. "Deep learning-based defect
    detection of metal parts: evaluating current methods in complex conditions." ICUMT 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.registry.catalogue import SourceEntry
from daad.loaders import mvtec_layout
from daad.loaders.base import NormalImage, Skipped
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "mpdd"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per defective test image with its ground-truth mask."""
    return mvtec_layout.iter_records(root, entry or catalogue_entry(ORIGIN))


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/good`` and ``test/good`` of every category."""
    return mvtec_layout.iter_normals(root, catalogue_entry(ORIGIN))
