"""The source catalogue: one entry per origin, kept as data in ``manifests/sources.toml``.

An entry says what the origin is (name, homepage, citation), under which licence it is
published, where to download it, and how its native defect names map onto the eight
DAAD classes. Native names that fit none of the classes map to ``unmapped``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from daad.tomlfile import read_toml, require_toml
from daad.sources.archives import MAX_MEMBERS, MAX_RATIO
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


PART_DEFAULTS = ("subpath", "format", "max_unpacked_bytes", "max_members", "max_ratio")
"""What a further archive of a source takes from its first unless it names its own."""


@dataclass(frozen=True, slots=True)
class Download:
    """An archive published at a stable URL, and where the data sits inside it."""

    url: str
    subpath: str = ""
    sha256: str | None = None
    """Archive checksum, only where the publisher's archive is byte-stable."""
    md5: str | None = None
    """Archive md5, where no sha256 of the publisher's archive is published (a weaker pin: it
    catches a changed or damaged archive, not a crafted collision)."""
    size: int | None = None
    format: str = "zip"
    keep: tuple[str, ...] = ()
    """What the loader reads besides the images the manifest names (masks, labels, normal
    images): ``fnmatch`` patterns under ``subpath`` (``*`` also crosses ``/``). When the
    origin has a manifest, nothing else is unpacked; without one, everything under ``subpath`` is."""
    max_unpacked_bytes: int = 4 << 30
    max_members: int = MAX_MEMBERS
    max_ratio: float = MAX_RATIO
    """Limits of this source's archive: bytes unpacked, entries, bytes unpacked per archive byte."""
    parts: tuple[Download, ...] = ()
    """The source's further archives, where it is published as several (AutoVI: one zip per
    category), ``[[<origin>.parts]]``: each is downloaded, checked against its own pin and unpacked
    into the same folder. A part takes this table's subpath, format and limits unless it names its
    own, and is pinned the same way (sha256, md5, or a committed manifest)."""

    @classmethod
    def from_toml(cls, value: dict) -> Download:
        value = dict(value)
        if "keep" in value:
            keep = value["keep"]
            if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
                raise TypeError(f"keep must be a list of patterns, got {keep!r}")
            value["keep"] = tuple(keep)
        parts = value.pop("parts", [])
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise TypeError(f"parts must be an array of tables ([[<origin>.parts]]), got {parts!r}")
        first = cls(**value)
        inherited = {k: getattr(first, k) for k in PART_DEFAULTS}
        more = []
        for i, part in enumerate(parts, 1):
            if "parts" in part or "keep" in part:
                raise TypeError(f"part {i} ({part.get('url')}): parts and keep belong to the origin's table")
            more.append(cls(**(inherited | part)))
            if (more[-1].sha256 is None, more[-1].md5 is None) != (first.sha256 is None, first.md5 is None):
                raise ValueError(f"part {i} ({more[-1].url}) is not pinned like the first archive (sha256 or md5)")
        return replace(first, parts=tuple(more))

    def archives(self) -> tuple[Download, ...]:
        """Every archive of the source, this table's first."""
        return (self, *self.parts)


MASK_FORMATS = ("bitmap", "labelme")
UNANNOTATED = ("skip", "normal")


@dataclass(frozen=True, slots=True)
class Layout:
    """A published layout described as data (``[<origin>.layout]``), read by :mod:`daad.loaders.layout`.

    Every file matching ``images`` (a glob under the root) whose root-relative POSIX path
    fully matches the regular expression ``match`` is an image; the named groups fill the
    templates ``id`` (the native id) and ``mask`` (the mask file's path). A group named
    ``label`` is the native label, ``split`` the record's split; ``label`` (the field) is a
    constant native label instead, and LabelMe masks carry their labels in their shapes.
    ``fields`` adds template fields that are not in the path, each looked up from one group's value.
    ``labels`` lists native labels that each have their own bitmap mask per image (``{label}``
    in the ``id`` and ``mask`` templates).
    """

    images: str
    match: str
    id: str
    mask: str
    mask_format: str = "bitmap"
    threshold: int = 0
    """Bitmap masks: pixels brighter than this are the anomaly (127: binarise 0/255 masks at 128)."""
    label: str | None = None
    normal_labels: tuple[str, ...] = ()
    """Native labels whose images are defect-free (MTD's ``Free``)."""
    unannotated: str = "skip"
    """An image without its mask file: ``skip`` (reported as ``no_annotation``) or ``normal``."""
    fields: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """``{field: {group: {value: text}}}``: a template field taken from a group's value, where a
    release names a folder otherwise than its split (CRACK500: ``train/`` -> ``label/``, ``val/`` -> ``val_label/``)."""
    labels: tuple[str, ...] = ()
    """Native labels with one mask file each per image (Cracks and Potholes: ``_CRACK.png``, ``_POTHOLE.png``):
    one record per label whose mask is not all background; an image whose masks all are is ``empty_mask``."""

    def values(self, groups: dict[str, str]) -> dict[str, str]:
        """The template fields of one match: its groups, and each of ``fields`` looked up from its group."""
        values = dict(groups)
        for name, table in self.fields.items():
            (group, texts), = table.items()
            try:
                values[name] = texts[groups[group]]
            except KeyError:
                raise ValueError(f"layout field {name!r} has no entry for {group} {groups[group]!r}") from None
        return values

    def __post_init__(self) -> None:
        if self.mask_format not in MASK_FORMATS:
            raise ValueError(f"layout mask_format {self.mask_format!r} is not one of {', '.join(MASK_FORMATS)}")
        if self.unannotated not in UNANNOTATED:
            raise ValueError(f"layout unannotated {self.unannotated!r} is not one of {', '.join(UNANNOTATED)}")
        try:
            groups = set(re.compile(self.match).groupindex)
        except re.error as exc:
            raise ValueError(f"layout match {self.match!r}: {exc}") from None
        for name, table in self.fields.items():
            if name in groups or len(table) != 1 or not set(table) <= groups:
                raise ValueError(f"layout field {name!r} must be a new name looked up from one group of match, "
                                 f"as {{group = {{value = text}}}}")
        for name in ("id", "mask"):
            fields = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            if missing := fields - groups - set(self.fields) - ({"label"} if self.labels else set()):
                raise ValueError(f"layout {name} {getattr(self, name)!r} uses {sorted(missing)}, not groups of match")
            if self.labels and "label" not in fields:
                raise ValueError(f"layout with labels needs {{label}} in its {name} {getattr(self, name)!r}")
        if self.labels and (self.mask_format != "bitmap" or self.label is not None or "label" in groups):
            raise ValueError("layout labels need bitmap masks and neither a constant label nor a label group")
        for name in ("images", "mask"):
            path = PurePosixPath(getattr(self, name))
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"layout {name} {getattr(self, name)!r} must stay under the origin's root")
        if self.mask_format == "bitmap" and self.label is None and "label" not in groups and not self.labels:
            raise ValueError("layout with bitmap masks needs a constant label or a (?P<label>...) group in match")


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
    layout: Layout | dict[str, Any] | None = None
    """How this origin's files are laid out, as data (``[<origin>.layout]``): a :class:`Layout`
    (a table with ``images``) for sources without a loader module of their own; otherwise the
    parameters its module reads (``reader = "mvtec"`` and MVTec AD's tree naming; ``reader = "loco"``;
    VisA's mask values)."""
    manual_download: str | None = None
    """How to get the data where the authors require accepting terms on a website."""
    derived_from: tuple[str, ...] = ()
    """Origins this one re-publishes (for leakage rules and duplicates)."""
    evaluation: bool = False
    """An evaluation dataset: generators are guarded against it (its origin, every origin derived
    from it or it from, and near copies of its images), and builds get a leak-free config for it."""
    in_daad_paper: bool = False
    """Listed in the DAAD authors' ``Existing_datasets`` sheet."""
    commercial_use: bool | None = None
    """Whether the licence allows commercial use (``None``: not stated)."""
    notes: str = ""
    loader: str | None = None
    """The layout loader reading a user's collection (``folder``, ``mvtec_ad``); ``None``: the origin's own."""
    unlisted_classes: str | None = None
    """What a native name absent from ``classes`` maps to: ``None`` (the default) refuses it, so that
    every name is decided in the catalogue; ``unmapped`` records it unmapped with its native label
    kept, for a source whose defect folders could not be read before its manifest is written at
    download time (3D-ADAM): the download's outcome names and counts those labels."""

    def map_class(self, native: str) -> str:
        """The DAAD class of a native defect name; ``unmapped`` when the catalogue says so.

        A native name absent from the map raises ``CatalogueError`` (every name must be
        decided in the catalogue, never silently dropped), unless ``unlisted_classes`` says
        ``unmapped``.
        """
        try:
            return self.classes[native]
        except KeyError:
            if self.unlisted_classes == UNMAPPED:
                return UNMAPPED
            raise CatalogueError(
                f"origin {self.id!r}: native defect {native!r} has no entry in {FILENAME} "
                f"(map it to a DAAD class or to {UNMAPPED!r})"
            ) from None

    @property
    def unmapped(self) -> tuple[str, ...]:
        return tuple(sorted(k for k, v in self.classes.items() if v == UNMAPPED))

    def unlisted(self, labels: dict[str, int]) -> dict[str, int]:
        """The native labels among ``labels`` (label -> count) that the class map does not name,
        where ``unlisted_classes`` lets them in (none otherwise: they would have been refused)."""
        if self.unlisted_classes is None:
            return {}
        return {label: n for label, n in sorted(labels.items()) if label not in self.classes}


class Catalogue:
    """All source entries, by origin id."""

    def __init__(self, entries: dict[str, SourceEntry]) -> None:
        self.entries = dict(sorted(entries.items()))

    @classmethod
    def load(cls, manifests_dir: Path) -> Catalogue:
        path = Path(manifests_dir) / FILENAME
        raw = require_toml(path, CatalogueError, "source catalogue")
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

    def family(self, origin: str) -> tuple[str, ...]:
        """``origin``, then every origin that shares its images through ``derived_from`` (what it
        re-publishes, what re-publishes it, and so on), sorted."""
        links: dict[str, set[str]] = {}
        for entry in self.entries.values():
            for parent in entry.derived_from:
                links.setdefault(entry.id, set()).add(parent)
                links.setdefault(parent, set()).add(entry.id)
        found, todo = {origin}, [origin]
        while todo:
            for other in links.get(todo.pop(), ()):
                if other not in found:
                    found.add(other)
                    todo.append(other)
        return (origin, *sorted(found - {origin}))

    def __contains__(self, origin: str) -> bool:
        return origin in self.entries

    def __iter__(self):
        return iter(self.entries.values())


def load_collections(manifests_dir: Path) -> dict[str, SourceEntry]:
    """The entries of ``collections.toml`` (none when it is absent)."""
    path = Path(manifests_dir) / COLLECTIONS
    raw = read_toml(path, CatalogueError)
    if raw is None:
        return {}
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
    layout = value.get("layout")
    if layout is not None and "images" in layout:
        layout = Layout(**{k: tuple(v) if k in ("normal_labels", "labels") else v for k, v in layout.items()})
    classes = {str(k): check_class(str(v)) for k, v in value.get("classes", {}).items()}
    unlisted = value.get("unlisted_classes")
    if unlisted not in (None, UNMAPPED):
        raise ValueError(f"unlisted_classes must be {UNMAPPED!r} when given, got {unlisted!r}")
    return SourceEntry(
        id=origin,
        name=value["name"],
        homepage=value["homepage"],
        licence=check_licence(value["licence"]),
        licence_url=value.get("licence_url", ""),
        citation=value.get("citation", "").strip(),
        source=Source(value.get("source", Source.EXISTING_DATASET)),
        classes=classes,
        download=Download.from_toml(download) if download else None,
        layout=layout,
        manual_download=value.get("manual_download"),
        derived_from=tuple(value.get("derived_from", ())),
        evaluation=bool(value.get("evaluation", False)),
        in_daad_paper=bool(value.get("in_daad_paper", False)),
        commercial_use=value.get("commercial_use"),
        notes=value.get("notes", "").strip(),
        loader=value.get("loader"),
        unlisted_classes=unlisted,
    )


def _merge_downloads(entries: dict[str, SourceEntry], path: Path) -> None:
    """Set ``download`` of each entry named in ``downloads.toml`` (absent file: nothing to merge)."""
    raw = read_toml(path, CatalogueError)
    if raw is None:
        return
    for origin, value in raw.items():
        if origin not in entries:
            raise CatalogueError(f"{path}: origin {origin!r} is not in {FILENAME}")
        if entries[origin].download is not None:
            raise CatalogueError(f"{path}: origin {origin!r} already has a download table in {FILENAME}")
        try:
            entries[origin] = replace(entries[origin], download=Download.from_toml(value))
        except (TypeError, ValueError) as exc:
            raise CatalogueError(f"{path}: origin {origin!r}: {exc}") from None
