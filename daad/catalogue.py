"""The source catalogue: one entry per origin, kept as data in ``manifests/sources.toml``.

An entry says what the origin is (name, homepage, citation), under which licence it is
published, where to download it, and how its native defect names map onto the eight
DAAD classes. Native names that fit none of the classes map to ``unmapped``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daad.errors import DaadError
from daad.licences import check_licence
from daad.taxonomy import UNMAPPED, Source, check_class

FILENAME = "sources.toml"
DOWNLOADS = "downloads.toml"
"""Download table (url, subpath, sha256, format per origin), merged into the entries."""
COLLECTIONS = "collections.toml"
"""Users' own named collections (``daad ingest NAME --loader ...``), entries like ``sources.toml``'s plus ``loader``."""


class CatalogueError(DaadError):
    """The catalogue file is malformed, or an origin is not in it."""


@dataclass(frozen=True, slots=True)
class Download:
    """An archive published at a stable URL, and where the data sits inside it."""

    url: str
    subpath: str = ""
    sha256: str | None = None
    """Archive checksum, only where the publisher's archive is byte-stable."""
    size: int | None = None
    format: str = "zip"


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One origin of the catalogue."""

    id: str
    name: str
    homepage: str
    licence: str
    licence_url: str
    citation: str
    source: Source = Source.EXISTING_DATASET
    classes: dict[str, str] = field(default_factory=dict)
    """Native defect name -> DAAD class or ``unmapped``."""
    download: Download | None = None
    manual_download: str | None = None
    """How to get the data where the authors require accepting terms on a website."""
    derived_from: tuple[str, ...] = ()
    """Origins this one re-publishes (for leakage rules)."""
    in_daad_paper: bool = False
    """Listed in the DAAD authors' ``Existing_datasets`` sheet."""
    commercial_use: bool | None = None
    """Whether the licence allows commercial use (``None``: not stated)."""
    notes: str = ""
    loader: str | None = None
    """The layout loader reading a user's collection (``folder``, ``mvtec_ad``); ``None``: the origin's own."""

    def map_class(self, native: str) -> str:
        """The DAAD class of a native defect name; ``unmapped`` when the catalogue says so.

        A native name absent from the map raises ``CatalogueError``: every name must be
        decided in the catalogue, never silently dropped.
        """
        try:
            return self.classes[native]
        except KeyError:
            raise CatalogueError(
                f"origin {self.id!r}: native defect {native!r} has no entry in {FILENAME} "
                f"(map it to a DAAD class or to {UNMAPPED!r})"
            ) from None

    @property
    def unmapped(self) -> tuple[str, ...]:
        return tuple(sorted(k for k, v in self.classes.items() if v == UNMAPPED))


class Catalogue:
    """All source entries, by origin id."""

    def __init__(self, entries: dict[str, SourceEntry]) -> None:
        self.entries = dict(sorted(entries.items()))

    @classmethod
    def load(cls, manifests_dir: Path) -> Catalogue:
        path = Path(manifests_dir) / FILENAME
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CatalogueError(f"no source catalogue at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise CatalogueError(f"{path}: {exc}") from None
        entries = _parse_entries(path, raw)
        _merge_downloads(entries, Path(manifests_dir) / DOWNLOADS)
        for origin, entry in load_collections(manifests_dir).items():
            if origin in entries:
                raise CatalogueError(f"{Path(manifests_dir) / COLLECTIONS}: collection {origin!r} is also in {FILENAME}")
            entries[origin] = entry
        return cls(entries)

    def __getitem__(self, origin: str) -> SourceEntry:
        try:
            return self.entries[origin]
        except KeyError:
            raise CatalogueError(f"origin {origin!r} is not in the source catalogue ({FILENAME})") from None

    def __contains__(self, origin: str) -> bool:
        return origin in self.entries

    def __iter__(self):
        return iter(self.entries.values())


def load_collections(manifests_dir: Path) -> dict[str, SourceEntry]:
    """The entries of ``collections.toml`` (none when it is absent)."""
    path = Path(manifests_dir) / COLLECTIONS
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    entries = _parse_entries(path, raw)
    for origin, entry in entries.items():
        if entry.loader is None:
            raise CatalogueError(f"{path}: collection {origin!r} names no loader")
    return entries


def _parse_entries(path: Path, raw: dict[str, Any]) -> dict[str, SourceEntry]:
    entries = {}
    for origin, value in raw.items():
        try:
            entries[origin] = parse_entry(origin, value)
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogueError(f"{path}: source {origin!r}: {exc}") from None
    return entries


def parse_entry(origin: str, value: dict[str, Any]) -> SourceEntry:
    """One catalogue entry from its TOML table; ``KeyError``/``TypeError``/``ValueError`` when it is wrong."""
    download = value.get("download")
    classes = {str(k): check_class(str(v)) for k, v in value.get("classes", {}).items()}
    return SourceEntry(
        id=origin,
        name=value["name"],
        homepage=value["homepage"],
        licence=check_licence(value["licence"]),
        licence_url=value.get("licence_url", ""),
        citation=value.get("citation", "").strip(),
        source=Source(value.get("source", Source.EXISTING_DATASET)),
        classes=classes,
        download=Download(**download) if download else None,
        manual_download=value.get("manual_download"),
        derived_from=tuple(value.get("derived_from", ())),
        in_daad_paper=bool(value.get("in_daad_paper", False)),
        commercial_use=value.get("commercial_use"),
        notes=value.get("notes", "").strip(),
        loader=value.get("loader"),
    )


def _merge_downloads(entries: dict[str, SourceEntry], path: Path) -> None:
    """Set ``download`` of each entry named in ``downloads.toml`` (absent file: nothing to merge)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    for origin, value in raw.items():
        if origin not in entries:
            raise CatalogueError(f"{path}: origin {origin!r} is not in {FILENAME}")
        if entries[origin].download is not None:
            raise CatalogueError(f"{path}: origin {origin!r} already has a download table in {FILENAME}")
        try:
            entries[origin] = replace(entries[origin], download=Download(**value))
        except TypeError as exc:
            raise CatalogueError(f"{path}: origin {origin!r}: {exc}") from None
