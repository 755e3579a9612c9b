"""The registry: all records of all manifests, and leak-free views of them.

``Registry(manifests_dir, roots).view(evaluation="mvtec_ad", classes=["crack"])`` gives
a :class:`RegistryView`: the records a generator may use when its output will be
evaluated on ``mvtec_ad``. Generators accept views only, never the registry itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from daad.registry.catalogue import Catalogue
from daad.errors import LeakageError, PathEscapeError, RecordFileError, RootNotFoundError
from daad.registry.exclusion import NO_EVALUATION, ExclusionRules
from daad.images import decode_image, read_verified, to_rgb_array, verified
from daad.licences import LicenceCatalogue
from daad.registry.manifest import default_manifests_dir, downloaded_manifests_dir, manifest_paths, read_manifest
from daad.record import ImageRef, Record
from daad.registry.neardup import query_signature
from daad.registry.roots import Roots, fetched_image_path, read_in_root, resolve_in_root
from daad.taxonomy import Status, check_class


class Registry:
    """Every record of ``manifests_dir``, with the roots to find their files."""

    def __init__(self, manifests_dir: Path | str | None = None, roots: Roots | None = None) -> None:
        self.manifests_dir = Path(manifests_dir) if manifests_dir is not None else default_manifests_dir()
        self.roots = roots or Roots()

    @cached_property
    def catalogue(self) -> Catalogue:
        return Catalogue.load(self.manifests_dir)

    @cached_property
    def licences(self) -> LicenceCatalogue:
        return LicenceCatalogue.load(self.manifests_dir)

    @cached_property
    def rules(self) -> ExclusionRules:
        return ExclusionRules.load(self.manifests_dir)

    @property
    def downloaded_manifests_dir(self) -> Path:
        """Where ``daad download`` writes the manifests of sources pinned by their archive's
        sha256 (``<data dir>/manifests``); they join the committed ones."""
        return downloaded_manifests_dir(self.roots.data)

    def manifests(self, origins: Iterable[str] | None = None) -> list[Path]:
        """Every origin's manifest, sorted by origin: the committed ones, and those written at
        download time for origins without a committed one."""
        by_origin = {p.stem: p for p in manifest_paths(self.downloaded_manifests_dir)}
        by_origin.update({p.stem: p for p in manifest_paths(self.manifests_dir)})
        if origins is not None:
            wanted = set(origins)
            by_origin = {o: p for o, p in by_origin.items() if o in wanted}
        return [by_origin[o] for o in sorted(by_origin)]

    def committed_manifest(self, origin: str) -> Path | None:
        """``origin``'s manifest in the checkout's ``manifests/``, if it has one."""
        path = self.manifests_dir / f"{origin}.jsonl"
        return path if path.is_file() else None

    def records(self, origins: Iterable[str] | None = None) -> Iterator[Record]:
        """Stream every record (all statuses), manifest by manifest, in id order."""
        for path in self.manifests(origins):
            yield from read_manifest(path)

    def image_path(self, record: Record) -> Path:
        """The local file of ``record``'s image (under its root, or in the fetch cache)."""
        if record.image.path is not None:
            return resolve_in_root(self.roots[record.origin], record.image.path, record.id)
        return _fetched(record.image, record.id)

    def read_image(self, record: Record) -> tuple[Path, bytes]:
        """Where ``record``'s image is read from, and its bytes, checked against its sha256."""
        return self.read_image_file(record.origin, record.image, record.id)

    def read_image_file(self, origin: str, image: ImageRef, record_id: str) -> tuple[Path, bytes]:
        """Where the image ``image`` of record ``record_id`` (of ``origin``) is read from, and its
        bytes, checked against its sha256.

        Raises ``RecordFileError`` (missing, empty, sha256 mismatch, not fetched),
        ``PathEscapeError`` or ``RootNotFoundError``.
        """
        if image.path is None:
            path = _fetched(image, record_id)
            return path, read_verified(path, image.sha256, record_id)
        root = self.roots[origin]
        data = read_in_root(root, image.path, record_id)
        path = root / image.path
        return path, verified(data, image.sha256, record_id, path)

    def query_signature(self, record: Record) -> np.ndarray | None:
        """The :func:`daad.registry.neardup.query_signature` of ``record``'s image, or ``None`` where its
        image cannot be read here (no root, not fetched, changed bytes)."""
        try:
            path, data = self.read_image(record)
            return query_signature(decode_image(data, record.id, path))
        except (RecordFileError, PathEscapeError, RootNotFoundError):
            return None

    def view(
        self,
        *,
        evaluation: str,
        classes: Iterable[str] | None = None,
        licences: Iterable[str] | None = None,
        origins: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        statuses: Iterable[str] = (Status.ACCEPTED,),
    ) -> RegistryView:
        """Records usable for a generator whose output is evaluated on ``evaluation``.

        ``evaluation`` is required: an evaluation dataset id from the exclusion rules, or
        ``"none"`` to state explicitly that no evaluation dataset needs guarding.
        """
        self.rules.rule(evaluation)  # unknown evaluation datasets fail here, not mid-run
        return RegistryView(
            self,
            evaluation=evaluation,
            classes=frozenset(check_class(c, allow_unmapped=False) for c in classes) if classes else None,
            licences=frozenset(licences) if licences else None,
            origins=frozenset(origins) if origins else None,
            sources=frozenset(sources) if sources else None,
            statuses=frozenset(Status(s) for s in statuses),
        )


def _fetched(image: ImageRef, record_id: str) -> Path:
    """Where ``daad fetch`` keeps a URL image; ``RecordFileError`` if it has not been fetched."""
    if image.sha256 is None:
        raise RecordFileError(record_id, image.url, "not_fetched", "run `daad fetch` first")
    return fetched_image_path(image.sha256)


@dataclass(frozen=True)
class RegistryView:
    """A filtered, leak-free selection of registry records (iterate it)."""

    registry: Registry
    evaluation: str
    classes: frozenset[str] | None = None
    licences: frozenset[str] | None = None
    origins: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    statuses: frozenset[Status] = frozenset({Status.ACCEPTED})

    def __iter__(self) -> Iterator[Record]:
        for record, reason in self.decisions():
            if reason is None:
                yield record

    def decisions(self) -> Iterator[tuple[Record, str | None]]:
        """Every record the filters select (never a ``duplicate_of`` another record), with the
        leakage reason that excludes it (or ``None``)."""
        for manifest in self.registry.manifests(self.origins):
            records = [r for r in read_manifest(manifest) if self._selected(r)]
            reasons = self.registry.rules.exclusion_reasons(records, self.evaluation, self.registry.query_signature)
            yield from zip(records, reasons)

    def _selected(self, record: Record) -> bool:
        return (
            record.status in self.statuses
            and record.duplicate_of is None
            and record.anomaly_class != "unmapped"
            and (self.classes is None or record.anomaly_class in self.classes)
            and (self.licences is None or record.licence in self.licences)
            and (self.sources is None or str(record.source) in self.sources)
        )

    def image_path(self, record: Record) -> Path:
        return self.registry.image_path(record)

    def read_image(self, record: Record) -> np.ndarray:
        """``H x W x 3`` ``uint8`` RGB, verified against the record's sha256."""
        path, data = self.registry.read_image(record)
        return to_rgb_array(decode_image(data, record.id, path))

    @staticmethod
    def read_mask(record: Record) -> np.ndarray:
        """``H x W`` ``uint8`` 0/1 anomaly mask."""
        if record.mask is None:
            raise RecordFileError(record.id, None, "no_mask", "record has no mask")
        return record.mask.decode()

    def describe(self) -> str:
        parts = [f"evaluation={self.evaluation}"]
        for name in ("classes", "licences", "origins", "sources"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={','.join(sorted(value))}")
        return " ".join(parts)


__all__ = ["NO_EVALUATION", "Registry", "RegistryView"]


def require_view(view: object, generator: str = "generators") -> RegistryView:
    """``view`` if it is a :class:`RegistryView` (which states its evaluation
    target); :class:`LeakageError` otherwise."""
    if not isinstance(view, RegistryView):
        raise LeakageError(
            f"{generator} needs a leak-free registry view (a RegistryView), not {type(view).__name__}: use "
            "Registry(...).view(evaluation=<evaluation dataset>), a leak-free view without that dataset's "
            "images and their near copies, or view(evaluation='none') to state that no evaluation "
            "dataset needs guarding"
        )
    return view
