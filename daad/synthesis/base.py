"""The interface every generator implements, and the row it yields.

A generator takes target normal images, a leak-free registry view and a seed, and
yields :class:`Synthesis` rows; :func:`daad.synthesis.output.write_generated` turns
them into a Hugging Face dataset folder (shards + card) shared by all generators.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from daad.registry import RegistryView


@dataclass(frozen=True, slots=True)
class Target:
    """A normal (defect-free) image of the target domain."""

    id: str
    image: np.ndarray
    """``H x W x 3`` ``uint8`` RGB."""
    licence: str = "unknown"


@dataclass(frozen=True, slots=True)
class Synthesis:
    """One pseudo-anomaly: image, binary mask and provenance."""

    image: np.ndarray
    """``H x W x 3`` ``uint8`` RGB."""
    mask: np.ndarray
    """``H x W`` ``uint8``; non-zero is the anomaly."""
    anomaly_class: str | None
    target_id: str
    source_ids: tuple[str, ...] = ()
    """Ids of the registry records whose pixels went into this row (leakage audit)."""
    details: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable per-row facts (scale type, STR, location, ...)."""


class Generator(Protocol):
    """What ``daad synth`` drives. ``name`` is the ``generator`` column value."""

    name: str

    def params(self) -> dict[str, Any]:
        """The generator's parameters, recorded in the output card."""
        ...

    def generate(
        self, targets: Iterable[Target], view: RegistryView | None, seed: int
    ) -> Iterator[Synthesis]:
        """Yield rows for ``targets``; every random choice derives from ``seed``."""
        ...
