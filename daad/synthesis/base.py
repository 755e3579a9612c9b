"""The interface every generator implements, and the row it yields.

A generator takes target normal images, a leak-free registry view and a seed, and
yields :class:`Synthesis` rows; :func:`daad.synthesis.output.write_generated` turns
them into a Hugging Face dataset folder (shards + card) shared by all generators.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from daad.counts import Counts

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


class PerTargetGenerator(Generator, Protocol):
    """A generator whose rows for target ``i`` depend only on the targets, ``i`` and the seed
    (each target draws from ``numpy.random.default_rng([seed, i])``), so targets can be
    split across processes (:mod:`daad.synthesis.parallel`) and give the same bytes."""

    report: GenerationReport

    def prepare(self, view: RegistryView | None) -> None:
        """Load what the rows need from ``view`` (source patterns, textures), once."""
        ...

    def rows_for(self, targets: Sequence[Target], index: int, seed: int) -> Iterator[Synthesis]:
        """The rows of ``targets[index]``."""
        ...


def per_target_rows(generator: PerTargetGenerator, targets: Sequence[Target], seed: int) -> Iterator[Synthesis]:
    """The rows of every target, in order (what ``generate`` yields once ``prepare`` has run)."""
    for index in range(len(targets)):
        yield from generator.rows_for(targets, index, seed)


GAVE_UP = "gave_up"
"""The skipped reason of an output given up after its tries."""


@dataclass
class GenerationReport(Counts):
    """A generator's counts: rows written (accepted), draws retried by reason (rejected), outputs
    given up (skipped as ``gave_up``), and quota moved to smaller scales. ``rows``, ``failures``
    and ``gave_up`` are the generators' names for the shared counts."""

    retries: int = 0
    quota_shifted: int = 0

    @property
    def rows(self) -> int:
        return self.accepted

    @rows.setter
    def rows(self, value: int) -> None:
        self.accepted = value

    @property
    def failures(self) -> Counter:
        return self.rejected

    @property
    def gave_up(self) -> int:
        return self.skipped[GAVE_UP]

    @gave_up.setter
    def gave_up(self, value: int) -> None:
        self.skipped[GAVE_UP] = value

    def add(self, other: GenerationReport) -> None:
        """Add the counts of ``other`` (e.g. a worker process's) to these."""
        super().add(other)
        self.retries += other.retries
        self.quota_shifted += other.quota_shifted

    def lines(self, max_tries: int) -> list[str]:
        """Human-readable lines for what did not go to plan."""
        lines = []
        if self.retries:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items()))
            lines.append(f"{self.retries} retried draws ({reasons})")
        if self.gave_up:
            lines.append(f"{self.gave_up} outputs given up after {max_tries} tries")
        if self.quota_shifted:
            lines.append(f"{self.quota_shifted} outputs moved to a smaller scale (no pattern large enough)")
        return lines
