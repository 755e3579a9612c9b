"""The catalogue entry a loader uses when none is passed in, and the loader of an origin that a
shared reader reads from that entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from daad.registry.catalogue import Catalogue, SourceEntry
from daad.registry.manifest import default_manifests_dir


@cache
def _default_catalogue() -> Catalogue:
    return Catalogue.load(default_manifests_dir())


def catalogue_entry(origin: str) -> SourceEntry:
    """``origin``'s entry in the default catalogue (``$DAAD_MANIFESTS`` or the checkout's)."""
    return _default_catalogue()[origin]


@dataclass(frozen=True)
class CatalogueReader:
    """The loader of one origin read by a shared reader from its catalogue entry (the same two
    functions as a loader module); a subclass names the reader's two functions of ``(root, entry)``."""

    origin: str
    read_records: ClassVar[Callable]
    read_normals: ClassVar[Callable]

    def iter_records(self, root, entry: SourceEntry | None = None):
        return self.read_records(root, entry or catalogue_entry(self.origin))

    def iter_normals(self, root):
        return self.read_normals(root, catalogue_entry(self.origin))
