"""A user's own named collection: ``daad ingest my_photos --loader folder --root my_photos=PATH``.

The origin id is the user's; the loader is one of the layouts that take their origin from
the catalogue entry (``LAYOUT_LOADERS``). The entry (name, licence, citation, source
kind, class map) comes from ``collection.toml`` beside the images, then from command-line
flags (flags win), on top of the collection's previous entry; it is kept in
``manifests/collections.toml`` (beside the published sources' ``sources.toml``), so that
``daad sources`` lists it and every command finds it. Each collection has its own entry
and manifest: any number live side by side, and ingesting one touches no other.

``collection.toml``::

    name = "Scratches on our housings"
    licence = "CC-BY-4.0"
    source = "reality_photo"
    citation = "Our lab, 2026"
    [classes]            # native class names of metadata.csv -> DAAD classes
    kratzer = "scratch"
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from daad.tomlfile import read_toml
from daad.atomic import write_atomically
from daad.registry.catalogue import COLLECTIONS, CatalogueError, SourceEntry, load_collections, parse_entry
from daad.errors import DaadError
from daad.taxonomy import ANOMALY_CLASSES, Source

ENTRY_FILE = "collection.toml"
LAYOUT_LOADERS = ("folder", "mvtec_ad")
"""Loaders that read any collection in their layout (they take the origin id from the entry)."""
ORIGIN_ID = re.compile(r"^[a-z0-9_]+$")
ENTRY_KEYS = ("name", "homepage", "licence", "licence_url", "citation", "source", "commercial_use", "notes", "classes")
"""What a collection's TOML or flags may set."""


class CollectionError(DaadError):
    """A collection's name, loader or entry is wrong; names the file or flag and what to run instead."""


def collection_entry(
    origin: str,
    loader: str,
    root: Path,
    flags: dict[str, Any],
    previous: SourceEntry | None = None,
) -> SourceEntry:
    """The catalogue entry of collection ``origin``: ``previous`` (or defaults), then
    ``<root>/collection.toml``, then the non-``None`` ``flags`` (``classes`` are merged)."""
    if not ORIGIN_ID.match(origin):
        raise CollectionError(
            f"collection name {origin!r} must be lowercase letters, digits and '_': "
            f"run e.g. `daad ingest my_photos --loader {loader} --root my_photos=PATH`")
    if loader not in LAYOUT_LOADERS:
        raise CollectionError(
            f"unknown layout loader {loader!r}; run `daad ingest {origin} --loader LOADER --root {origin}=PATH` "
            f"with one of {', '.join(LAYOUT_LOADERS)}")
    value: dict[str, Any] = (
        _as_table(previous) if previous is not None else
        {"name": origin, "homepage": "", "licence": "unknown", "source": str(Source.REALITY_PHOTO),
         "classes": {c: c for c in ANOMALY_CLASSES}}
    )
    beside = Path(root) / ENTRY_FILE
    if beside.is_file():
        _update(value, read_toml(beside, CollectionError) or {}, str(beside))
    _update(value, {k: v for k, v in flags.items() if v is not None}, "the command line")
    value["loader"] = loader
    try:
        return parse_entry(origin, value)
    except (KeyError, TypeError, ValueError) as exc:
        where = beside if beside.is_file() else "the command line"
        raise CollectionError(f"collection {origin!r} ({where}): {exc}; fix it there and run "
                              f"`daad ingest {origin} --loader {loader} --root {origin}=PATH` again") from None


def _update(value: dict[str, Any], table: dict[str, Any], where: str) -> None:
    unknown = set(table) - set(ENTRY_KEYS)
    if unknown:
        raise CollectionError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use only {', '.join(ENTRY_KEYS)}")
    classes = table.get("classes")
    if classes is not None and not isinstance(classes, dict):
        raise CollectionError(f"{where}: classes must be a table of native name = DAAD class")
    value.update({k: v for k, v in table.items() if k != "classes"})
    if classes:
        value["classes"] = {**value.get("classes", {}), **classes}


def _as_table(entry: SourceEntry) -> dict[str, Any]:
    """The TOML table of an entry (what :func:`daad.registry.catalogue.parse_entry` reads back)."""
    table = {k: v for k, v in asdict(entry).items() if k not in ("id", "download", "derived_from", "in_daad_paper")}
    table["source"] = str(entry.source)
    return {k: v for k, v in table.items() if v is not None}


def save_collection(manifests_dir: Path, entry: SourceEntry) -> bool:
    """Write ``entry`` into ``manifests/collections.toml`` (atomically); ``False`` when it was already there."""
    entries = load_collections(manifests_dir)
    if entries.get(entry.id) == entry:
        return False
    entries[entry.id] = entry
    write_atomically(Path(manifests_dir) / COLLECTIONS, render_collections(entries.values()))
    return True


def render_collections(entries: Iterable[SourceEntry]) -> str:
    """``collections.toml`` holding ``entries``, sorted by id."""
    header = "# Users' own collections, written by `daad ingest NAME --loader ...` (entries as in sources.toml).\n"
    return header + "".join(_render(e) for e in sorted(entries, key=lambda e: e.id))


def _render(entry: SourceEntry) -> str:
    table = _as_table(entry)
    classes = table.pop("classes", {})
    lines = [f"\n[{entry.id}]"]
    lines += [f"{key} = {_value(v)}" for key, v in table.items()]
    lines.append(f"\n[{entry.id}.classes]")
    lines += [f"{_string(k)} = {_string(v)}" for k, v in classes.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    raise CatalogueError(f"cannot write {value!r} into {COLLECTIONS}")


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")
