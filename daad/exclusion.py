"""Leakage rules: what a generator preparing data for an evaluation dataset must not see.

Rules are data (``manifests/exclusions.toml``): each evaluation dataset names the
origins it excludes (its own and any derived from it).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from daad.errors import DaadError
from daad.record import Record

FILENAME = "exclusions.toml"
NO_EVALUATION = "none"
"""The explicit choice of a view guarded against no evaluation dataset."""


class ExclusionError(DaadError):
    """The exclusions file is malformed, or an evaluation dataset is unknown."""


@dataclass(frozen=True, slots=True)
class ExclusionRule:
    evaluation: str
    origins: tuple[str, ...]
    near_duplicates: bool = True


class ExclusionRules:
    """All rules, by evaluation dataset."""

    def __init__(self, rules: dict[str, ExclusionRule]) -> None:
        self.rules = dict(sorted(rules.items()))

    @classmethod
    def load(cls, manifests_dir: Path) -> ExclusionRules:
        path = Path(manifests_dir) / FILENAME
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExclusionError(f"no exclusion rules at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ExclusionError(f"{path}: {exc}") from None
        rules = {}
        for name, value in raw.items():
            origins = tuple(value.get("origins", (name,)))
            rules[name] = ExclusionRule(name, origins, bool(value.get("near_duplicates", True)))
        return cls(rules)

    def rule(self, evaluation: str) -> ExclusionRule | None:
        """The rule for ``evaluation`` (``None`` for the explicit ``"none"``)."""
        if evaluation == NO_EVALUATION:
            return None
        try:
            return self.rules[evaluation]
        except KeyError:
            raise ExclusionError(
                f"unknown evaluation dataset {evaluation!r}; known: {', '.join(self.rules)} "
                f"(or {NO_EVALUATION!r} for no evaluation)"
            ) from None

    def exclusion_reason(self, record: Record, evaluation: str) -> str | None:
        """Why ``record`` must not be used for ``evaluation``, or ``None`` when it may."""
        rule = self.rule(evaluation)
        if rule is not None and record.origin in rule.origins:
            return f"origin {record.origin} is excluded for evaluation on {evaluation}"
        return None
