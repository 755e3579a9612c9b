"""What every batch run reports: how many items went in (accepted), how many were refused and
why (rejected, by reason) and how many were left out and why (skipped, by reason).

``daad build`` (:class:`~daad.dataset.summary.BuildSummary`), ``daad validate``
(:class:`~daad.registry.validate.ValidationReport`) and the generators
(:class:`~daad.synthesis.base.GenerationReport`) each extend it with what only they know.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Counts:
    """Accepted items, and rejected and skipped ones by reason."""

    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts (a worker's, a chunk's) to these."""
        self.accepted += other.accepted
        self.rejected.update(other.rejected)
        self.skipped.update(other.skipped)

    @property
    def ok(self) -> bool:
        """Nothing was rejected."""
        return not sum(self.rejected.values())

    def line(self) -> str:
        """``accepted N; rejected M (reason k, ...); skipped: reason k, ...`` for people."""
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()) if v)
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()) if v) or "none"
        return (f"accepted {self.accepted}; rejected {sum(self.rejected.values())}"
                f"{f' ({reasons})' if reasons else ''}; skipped: {skipped}")
