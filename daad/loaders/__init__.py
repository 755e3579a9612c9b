"""One module per source: each reads a dataset as its authors publish it.

``LOADERS`` maps an origin id to its module; every module exposes
``iter_records(root, entry=None)`` and ``iter_normals(root)``. A source whose layout is
described as data in the catalogue (``[<origin>.layout]``) has no module: it is read by
:class:`daad.loaders.layout.LayoutLoader` (image and mask path templates) or
:class:`daad.loaders.mvtec_layout.MvtecLoader` (``reader = "mvtec"``) or
:class:`daad.loaders.loco_layout.LocoLoader` (``reader = "loco"``), which expose the same
two functions. A user's
named collection is read by the loader its catalogue entry names (:mod:`daad.registry.collection`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from daad.registry.catalogue import CatalogueError, Layout
from daad.errors import DaadError
from daad.loaders.catalogue_entry import catalogue_entry
from daad.loaders.layout import LayoutLoader
from daad.loaders.loco_layout import READER as LOCO_READER
from daad.loaders.loco_layout import LocoLoader
from daad.loaders.mvtec_layout import READER as MVTEC_READER
from daad.loaders.mvtec_layout import MvtecLoader

if TYPE_CHECKING:
    from daad.registry.catalogue import SourceEntry

LOADERS: dict[str, str] = {
    "crackforest": "daad.loaders.crackforest",
    "daad_online_sources": "daad.loaders.daad_online_sources",
    "dagm2007": "daad.loaders.dagm2007",
    "folder": "daad.loaders.folder",
    "kolektorsdd": "daad.loaders.kolektorsdd",
    "kolektorsdd_original": "daad.loaders.kolektorsdd",
    "ksdd2": "daad.loaders.ksdd2",
    "neu_seg": "daad.loaders.neu_seg",
    "sd_saliency_900": "daad.loaders.sd_saliency_900",
    "visa": "daad.loaders.visa",
}


def get_loader(origin: str, entry: SourceEntry | None = None) -> ModuleType | LayoutLoader | MvtecLoader | LocoLoader:
    """The loader of ``origin``: its own module, the loader its catalogue ``entry`` names (a
    user's collection), or the shared reader of the layout its catalogue entry describes."""
    name = entry.loader if entry is not None and entry.loader else origin
    if name in LOADERS:
        return importlib.import_module(LOADERS[name])
    try:
        layout = (entry if entry is not None and name == origin else catalogue_entry(name)).layout
    except CatalogueError as exc:
        raise DaadError(
            f"no loader for origin {origin!r}: {exc}; modules: {', '.join(sorted(LOADERS))} "
            f"(a collection of your own: `daad ingest {origin} --loader folder --root {origin}=PATH`)"
        ) from None
    if isinstance(layout, dict) and layout.get("reader") == MVTEC_READER:
        return MvtecLoader(name)
    if isinstance(layout, dict) and layout.get("reader") == LOCO_READER:
        return LocoLoader(name)
    if not isinstance(layout, Layout):
        raise DaadError(
            f"no loader for origin {origin!r}: no module and no [{origin}.layout] table with images in the catalogue "
            f"(a collection of your own: `daad ingest {origin} --loader folder --root {origin}=PATH`)"
        )
    return LayoutLoader(origin)
