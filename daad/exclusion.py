"""Leakage rules: what a generator preparing data for an evaluation dataset must not see.

Rules are data (``manifests/exclusions.toml``): each evaluation dataset names the
origins it excludes (its own and any derived from it) and whether near copies of its
images in other origins are excluded too. The evaluation images' perceptual hashes are
data as well (``manifests/eval_hashes/<dataset>.txt``, written by ``daad exclusions
hash``), so views and builds stay offline and deterministic. A record is a near copy
when its ``phash`` is within :data:`daad.neardup.THRESHOLD` bits of one of them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from tqdm.auto import tqdm

from daad.atomic import write_atomically
from daad.errors import DaadError, LeakageError
from daad.neardup import HashIndex, parse_hash, variant_hashes
from daad.record import Record

if TYPE_CHECKING:
    from daad.registry import RegistryView

FILENAME = "exclusions.toml"
HASHES_DIR = "eval_hashes"
NO_EVALUATION = "none"
"""The explicit choice of a view guarded against no evaluation dataset."""


class ExclusionError(DaadError):
    """The exclusions file is malformed, or an evaluation dataset is unknown."""


@dataclass(frozen=True, slots=True)
class ExclusionRule:
    evaluation: str
    origins: tuple[str, ...]
    near_duplicates: bool = True


@dataclass(frozen=True)
class EvaluationHashes:
    """The perceptual hashes of one evaluation dataset's images (several per image)."""

    hashes: tuple[int, ...]
    image_ids: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> EvaluationHashes:
        """Lines ``<16 hex digits> <image id>``; ``#`` starts a comment."""
        hashes, ids = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                value, image_id = line.split(maxsplit=1)
                hashes.append(parse_hash(value))
            except ValueError as exc:
                raise ExclusionError(f"{path}:{number}: expected '<16 hex digits> <image id>': {exc}") from None
            ids.append(image_id)
        return cls(tuple(hashes), tuple(ids))

    @classmethod
    def of_images(cls, images: Iterable[tuple[str, Path]], progress: bool = False) -> EvaluationHashes:
        """The :func:`~daad.neardup.variant_hashes` of each ``(image id, file)``."""
        hashes, ids = [], []
        for image_id, path in tqdm(list(images), desc="hash", unit="img", disable=not progress):
            try:
                with Image.open(path) as image:
                    variants = variant_hashes(image)
            except OSError as exc:
                raise ExclusionError(f"{image_id}: cannot hash {path}: {exc}") from None
            hashes += variants
            ids += [image_id] * len(variants)
        return cls(tuple(hashes), tuple(ids))

    def write(self, path: Path, header: str) -> None:
        lines = sorted({f"{h:016x} {i}" for h, i in zip(self.hashes, self.image_ids)}, key=lambda s: (s[17:], s[:16]))
        text = "".join(f"# {x}\n" for x in header.splitlines()) + "\n".join(lines) + "\n"
        write_atomically(path, [text])


class ExclusionRules:
    """All rules, by evaluation dataset, with the evaluation hashes found beside them."""

    def __init__(self, rules: dict[str, ExclusionRule], hashes_dir: Path | None = None) -> None:
        self.rules = dict(sorted(rules.items()))
        self.hashes_dir = hashes_dir

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
            if name not in origins:
                raise ExclusionError(f"{path}: [{name}] must exclude its own origin {name!r}")
            rules[name] = ExclusionRule(name, origins, bool(value.get("near_duplicates", True)))
        return cls(rules, Path(manifests_dir) / HASHES_DIR)

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

    def hashes_path(self, evaluation: str) -> Path:
        if self.hashes_dir is None:
            raise ExclusionError("these rules were not loaded from a manifests folder")
        return self.hashes_dir / f"{evaluation}.txt"

    def hashes(self, evaluation: str) -> EvaluationHashes | None:
        """The stored hashes of ``evaluation``'s images, or ``None`` when none are stored yet."""
        rule = self.rule(evaluation)
        if rule is None or not rule.near_duplicates or self.hashes_dir is None:
            return None
        path = self.hashes_path(evaluation)
        return _load(path, path.stat().st_mtime_ns)[0] if path.exists() else None

    def _index(self, evaluation: str) -> HashIndex:
        path = self.hashes_path(evaluation)
        return _load(path, path.stat().st_mtime_ns)[1]

    def exclusion_reason(self, record: Record, evaluation: str) -> str | None:
        """Why ``record`` must not be used for ``evaluation``, or ``None`` when it may."""
        return self.exclusion_reasons([record], evaluation)[0]

    def exclusion_reasons(self, records: Sequence[Record], evaluation: str) -> list[str | None]:
        """:meth:`exclusion_reason` for many records at once (one index query)."""
        rule = self.rule(evaluation)
        if rule is None:
            return [None] * len(records)
        reasons: list[str | None] = [
            f"origin {r.origin} is excluded for evaluation on {evaluation}" if r.origin in rule.origins else None
            for r in records
        ]
        stored = self.hashes(evaluation)
        if stored is None:
            return reasons
        todo = [i for i, r in enumerate(records) if reasons[i] is None and r.phash is not None]
        matches = self._index(evaluation).query([parse_hash(records[i].phash) for i in todo])
        for i, hit, dist in zip(todo, matches.index, matches.distance):
            if hit >= 0:
                reasons[i] = (
                    f"near copy of {evaluation} image {stored.image_ids[hit]} "
                    f"(perceptual hash {dist} bits apart)"
                )
        return reasons

    def near_duplicate_evaluations(self, records: Iterable[Record]) -> dict[str, list[str]]:
        """Record id -> evaluation datasets (sorted) whose images it is a near copy of
        (records of an excluded origin are left out: the origin rule already covers them)."""
        records = list(records)
        found: dict[str, list[str]] = {}
        for name, rule in self.rules.items():
            stored = self.hashes(name)
            if stored is None:
                continue
            for record, reason in zip(records, self.exclusion_reasons(records, name)):
                if reason is not None and record.origin not in rule.origins:
                    found.setdefault(record.id, []).append(name)
        return found


@cache
def _load(path: Path, mtime_ns: int) -> tuple[EvaluationHashes, HashIndex]:
    """The hashes file at ``path`` (as of ``mtime_ns``) and its index, read once per process."""
    stored = EvaluationHashes.read(path)
    return stored, HashIndex(stored.hashes)


def require_view(view: object, generator: str = "generators") -> RegistryView:
    """``view`` if it is a :class:`~daad.registry.RegistryView` (which states its evaluation
    target); :class:`LeakageError` otherwise."""
    from daad.registry import RegistryView

    if not isinstance(view, RegistryView):
        raise LeakageError(
            f"{generator} needs a leak-free registry view (a RegistryView), not {type(view).__name__}: use "
            "Registry(...).view(evaluation=<evaluation dataset>), a leak-free view without that dataset's "
            "images and their near copies, or view(evaluation='none') to state that no evaluation "
            "dataset needs guarding"
        )
    return view
