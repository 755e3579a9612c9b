"""The counts one registry build reports, kept in ``build.json`` and printed on the card."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from daad.counts import Counts


@dataclass
class BuildSummary(Counts):
    """Counts of one build: rows written (accepted), records rejected (with reasons) and skipped."""

    errors: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    """(anomaly_class, source, licence) -> rows."""
    origins: Counter = field(default_factory=Counter)
    image_bytes: int = 0
    licence_policy: str = "all"
    reused: list[str] = field(default_factory=list)
    """Origins whose shards were kept from the previous build (inputs unchanged)."""

    def add(self, other: BuildSummary) -> None:
        super().add(other)
        self.errors += other.errors
        self.counts.update(other.counts)
        self.origins.update(other.origins)
        self.image_bytes += other.image_bytes

    @classmethod
    def from_json(cls, value: dict) -> BuildSummary:
        return cls(
            accepted=value["accepted"],
            rejected=Counter(value["rejected"]),
            skipped=Counter(value["skipped"]),
            counts=Counter({(c["anomaly_class"], c["source"], c["licence"]): c["rows"] for c in value["counts"]}),
            origins=Counter(value["origins"]),
            image_bytes=value["image_bytes"],
        )

    def line(self) -> str:
        rej = sum(self.rejected.values())
        skip = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"built {self.accepted} rows from {len(self.origins)} origin(s); rejected {rej}; skipped: {skip}"

    def to_json(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "origins": dict(sorted(self.origins.items())),
            "image_bytes": self.image_bytes,
            "counts": [
                {"anomaly_class": c, "source": s, "licence": lic, "rows": n}
                for (c, s, lic), n in sorted(self.counts.items())
            ],
        }
