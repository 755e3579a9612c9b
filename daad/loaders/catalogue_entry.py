"""The catalogue entry a loader uses when none is passed in."""

from __future__ import annotations

from functools import cache

from daad.registry.catalogue import Catalogue, SourceEntry
from daad.registry.manifest import default_manifests_dir


@cache
def _default_catalogue() -> Catalogue:
    return Catalogue.load(default_manifests_dir())


def catalogue_entry(origin: str) -> SourceEntry:
    """``origin``'s entry in the default catalogue (``$DAAD_MANIFESTS`` or the checkout's)."""
    return _default_catalogue()[origin]
