"""One module per source: each reads a dataset as its authors publish it.

``LOADERS`` maps an origin id to its module; every module exposes
``iter_records(root, entry=None)`` and ``iter_normals(root)``. A source whose layout is
described as data in the catalogue (``[<origin>.layout]``) has no module: it is read by
:class:`daad.loaders.layout.LayoutLoader`, which exposes the same two functions.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from daad.catalogue import CatalogueError, Layout
from daad.errors import DaadError
from daad.loaders.catalogue_entry import catalogue_entry
from daad.loaders.layout import LayoutLoader

LOADERS: dict[str, str] = {
    "btad": "daad.loaders.btad",
    "crackforest": "daad.loaders.crackforest",
    "daad_online_sources": "daad.loaders.daad_online_sources",
    "dagm2007": "daad.loaders.dagm2007",
    "folder": "daad.loaders.folder",
    "kolektorsdd": "daad.loaders.kolektorsdd",
    "kolektorsdd_original": "daad.loaders.kolektorsdd",
    "ksdd2": "daad.loaders.ksdd2",
    "mpdd": "daad.loaders.mpdd",
    "mvtec_ad": "daad.loaders.mvtec_ad",
    "mvtec_loco": "daad.loaders.mvtec_loco",
    "sd_saliency_900": "daad.loaders.sd_saliency_900",
    "visa": "daad.loaders.visa",
}


def get_loader(origin: str) -> ModuleType | LayoutLoader:
    """The loader module of ``origin``, or its layout loader when the catalogue describes its layout."""
    if origin in LOADERS:
        return importlib.import_module(LOADERS[origin])
    try:
        layout = catalogue_entry(origin).layout
    except CatalogueError as exc:
        raise DaadError(f"no loader for origin {origin!r}: {exc}; modules: {', '.join(sorted(LOADERS))}") from None
    if not isinstance(layout, Layout):
        raise DaadError(f"no loader for origin {origin!r}: no module and no [{origin}.layout] table with images in the catalogue")
    return LayoutLoader(origin)
