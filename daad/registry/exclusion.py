"""Leakage rules: what a generator preparing data for an evaluation dataset must not see.

Rules are data: every evaluation dataset of the catalogue (``evaluation = true`` in
``manifests/sources.toml``) excludes its own origin and every origin that shares its images
through ``derived_from``, and near copies of its images in other origins;
``manifests/exclusions.toml`` replaces that default where a dataset needs another rule. The
evaluation images' perceptual hashes are data as well (``manifests/eval_hashes/<dataset>.txt``, written by ``daad exclusions
hash``), so views and builds stay offline and deterministic: per image its sixteen
dihedral and crop variant hashes and its fine signature (:mod:`daad.registry.neardup`). A record
is a near copy when its ``phash`` is within :data:`daad.registry.neardup.THRESHOLD` bits of one of
the variant hashes and the fine signature of its image confirms it under that variant;
where the record's image cannot be read the hash match alone excludes it (said in the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from daad.tomlfile import read_toml
from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.registry.catalogue import Catalogue, CatalogueError
from daad.registry.neardup import (
    FINE_SIZE, FINE_THRESHOLD, VARIANTS, HashIndex, fine_distance, fine_signature, pack_fine, parse_hash, unpack_fine,
    variant_hashes,
)
from daad.record import Record

FILENAME = "exclusions.toml"
HASHES_DIR = "eval_hashes"
NO_EVALUATION = "none"
"""The explicit choice of a view guarded against no evaluation dataset."""
FineOf = Callable[[Record], "np.ndarray | None"]
"""The :func:`daad.registry.neardup.query_signature` of a record's image, or ``None`` where it cannot be read."""


class ExclusionError(DaadError):
    """The exclusions file is malformed, or an evaluation dataset is unknown."""


@dataclass(frozen=True, slots=True)
class ExclusionRule:
    evaluation: str
    origins: tuple[str, ...]
    near_duplicates: bool = True


@dataclass(frozen=True)
class EvaluationHashes:
    """Per image of one evaluation dataset: its id, its :data:`~daad.registry.neardup.VARIANTS`
    variant hashes (``n x 16`` ``uint64``) and its fine signature (``n x 2 x 24 x 24`` bool)."""

    image_ids: tuple[str, ...]
    variants: np.ndarray
    fine: np.ndarray

    @property
    def hashes(self) -> np.ndarray:
        """Every variant hash, image by image (hash ``i`` is variant ``i % 16`` of image ``i // 16``)."""
        return self.variants.reshape(-1)

    @classmethod
    def read(cls, path: Path) -> EvaluationHashes:
        """Lines ``<16 variant hashes, comma-separated> <fine signature hex> <image id>``;
        ``#`` starts a comment."""
        variants, fine, ids = [], [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                hashes, signature, image_id = line.split(maxsplit=2)
                values = [parse_hash(h) for h in hashes.split(",")]
                if len(values) != VARIANTS:
                    raise ValueError(f"{len(values)} variant hashes, expected {VARIANTS}")
                fine.append(unpack_fine(signature))
            except ValueError as exc:
                raise ExclusionError(
                    f"{path}:{number}: expected '<{VARIANTS} comma-separated 16-hex-digit hashes> <fine signature> "
                    f"<image id>': {exc}; rewrite it with `daad exclusions hash {path.stem} --root {path.stem}=PATH`"
                ) from None
            variants.append(values)
            ids.append(image_id)
        return cls(tuple(ids), np.array(variants, dtype=np.uint64).reshape(-1, VARIANTS), _stack(fine))

    @classmethod
    def of_images(cls, images: Iterable[tuple[str, Path]], progress: bool = False) -> EvaluationHashes:
        """The variant hashes and fine signature of each ``(image id, file)``."""
        variants, fine, ids = [], [], []
        for image_id, path in tqdm(list(images), desc="hash", unit="img", disable=not progress):
            try:
                with Image.open(path) as image:
                    variants.append(variant_hashes(image))
                    fine.append(fine_signature(image))
            except OSError as exc:
                raise ExclusionError(f"{image_id}: cannot hash {path}: {exc}") from None
            ids.append(image_id)
        return cls(tuple(ids), np.array(variants, dtype=np.uint64).reshape(-1, VARIANTS), _stack(fine))

    def write(self, path: Path, header: str) -> None:
        """Atomically, one line per image sorted by image id."""
        lines = [
            f"{','.join(f'{int(h):016x}' for h in hashes)} {pack_fine(fine)} {image_id}"
            for image_id, hashes, fine in sorted(zip(self.image_ids, self.variants, self.fine), key=lambda x: x[0])
        ]
        text = "".join(f"# {x}\n" for x in header.splitlines()) + "".join(f"{x}\n" for x in lines)
        write_atomically(path, [text])

    def matches(
        self, index: HashIndex, phashes: Sequence[int], fine_of: Callable[[int], np.ndarray | None],
        confirm: Callable[[int, int, int], bool] | None = None,
    ) -> list[NearCopy | None]:
        """Per query pHash, the stored image it is a near copy of (``None``: none).

        ``index`` is the :class:`~daad.registry.neardup.HashIndex` of :attr:`hashes`; ``fine_of(i)`` the
        :func:`~daad.registry.neardup.query_signature` of query ``i``, asked only for queries with a hash match. The
        best confirmed variant wins; without a signature the nearest hash match is kept, unconfirmed. ``confirm(i,
        image, variant)``, where given (the registry-wide dedup's detail check), is asked of query ``i``'s confirmed
        candidates, nearest first, until one passes; a candidate it refuses is no match."""
        pairs = index.pairs(phashes)
        found: list[NearCopy | None] = [None] * len(phashes)
        fine: dict[int, np.ndarray | None] = {}
        confirmed: dict[int, list[tuple[float, int, int, int]]] = {}  # query -> (share, bits, image, variant)
        for q, hit, bits in zip(pairs.query.tolist(), pairs.index.tolist(), pairs.distance.tolist()):
            if q not in fine:
                fine[q] = fine_of(q)
            image = hit // VARIANTS
            if fine[q] is None:
                found[q] = found[q] or NearCopy(image, bits, None)
                continue
            share = fine_distance(self.fine[image], hit % VARIANTS, fine[q])
            if share <= FINE_THRESHOLD:
                confirmed.setdefault(q, []).append((share, bits, image, hit % VARIANTS))
        for q, candidates in confirmed.items():
            for share, bits, image, variant in sorted(candidates):
                if confirm is None or confirm(q, image, variant):
                    found[q] = NearCopy(image, bits, share)
                    break
        return found


@dataclass(frozen=True, slots=True)
class NearCopy:
    """A query's match: stored image index, pHash bits apart, share of fine signs apart
    (``None``: unconfirmed, the query's image was not read)."""

    image: int
    bits: int
    share: float | None


def _stack(fine: list[np.ndarray]) -> np.ndarray:
    return np.array(fine, dtype=bool).reshape(-1, 2, FINE_SIZE, FINE_SIZE)


class ExclusionRules:
    """All rules, by evaluation dataset, with the evaluation hashes found beside them."""

    def __init__(self, rules: dict[str, ExclusionRule], hashes_dir: Path | None = None) -> None:
        self.rules = dict(sorted(rules.items()))
        self.hashes_dir = hashes_dir

    @classmethod
    def load(cls, manifests_dir: Path) -> ExclusionRules:
        """The default rule of every evaluation dataset in the catalogue (``evaluation = true``: its
        origin and every origin of its ``derived_from`` family, near copies too), then the tables of
        ``exclusions.toml``, each replacing a dataset's rule or adding one."""
        path = Path(manifests_dir) / FILENAME
        try:
            catalogue = Catalogue.load(manifests_dir)
        except CatalogueError:
            catalogue = None  # a bare folder of manifests: the rules file alone
        raw = read_toml(path, ExclusionError)
        if raw is None:
            if catalogue is None:
                raise ExclusionError(f"no exclusion rules at {path} and no source catalogue beside it")
            raw = {}
        rules = {e.id: ExclusionRule(e.id, catalogue.family(e.id)) for e in catalogue or () if e.evaluation}
        for name, value in raw.items():
            default = catalogue.family(name) if catalogue is not None else (name,)
            origins = tuple(value.get("origins", default))
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

    def exclusion_reason(self, record: Record, evaluation: str, fine_of: FineOf | None = None) -> str | None:
        """Why ``record`` must not be used for ``evaluation``, or ``None`` when it may."""
        return self.exclusion_reasons([record], evaluation, fine_of)[0]

    def exclusion_reasons(
        self, records: Sequence[Record], evaluation: str, fine_of: FineOf | None = None
    ) -> list[str | None]:
        """:meth:`exclusion_reason` for many records at once (one index query).

        ``fine_of`` gives a record image's fine signature, read only for the records whose
        hash matches; without it (or where it gives ``None``) a hash match excludes unconfirmed."""
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
        found = stored.matches(
            self._index(evaluation),
            [parse_hash(records[i].phash) for i in todo],
            lambda q: fine_of(records[todo[q]]) if fine_of is not None else None,
        )
        for i, match in zip(todo, found):
            if match is not None:
                confirmation = (
                    "unconfirmed: its image was not read" if match.share is None
                    else f"fine signatures {match.share:.0%} apart"
                )
                reasons[i] = (
                    f"near copy of {evaluation} image {stored.image_ids[match.image]} "
                    f"(perceptual hash {match.bits} bits apart, {confirmation})"
                )
        return reasons

    def near_duplicate_evaluations(
        self, records: Iterable[Record], fine_of: FineOf | None = None
    ) -> dict[str, list[str]]:
        """Record id -> evaluation datasets (sorted) whose images it is a near copy of
        (records of an excluded origin are left out: the origin rule already covers them)."""
        records = list(records)
        found: dict[str, list[str]] = {}
        for name, rule in self.rules.items():
            stored = self.hashes(name)
            if stored is None:
                continue
            for record, reason in zip(records, self.exclusion_reasons(records, name, fine_of)):
                if reason is not None and record.origin not in rule.origins:
                    found.setdefault(record.id, []).append(name)
        return found


@cache
def _load(path: Path, mtime_ns: int) -> tuple[EvaluationHashes, HashIndex]:
    """The hashes file at ``path`` (as of ``mtime_ns``) and its index, read once per process."""
    stored = EvaluationHashes.read(path)
    return stored, HashIndex(stored.hashes)
