"""One module per source: each reads a dataset as its authors publish it.

``LOADERS`` maps an origin id to its module; every module exposes
``iter_records(root, entry=None)`` and ``iter_normals(root)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from daad.errors import DaadError

LOADERS: dict[str, str] = {
    "btad": "daad.loaders.btad",
    "crackforest": "daad.loaders.crackforest",
    "daad_online_sources": "daad.loaders.daad_online_sources",
    "dagm2007": "daad.loaders.dagm2007",
    "folder": "daad.loaders.folder",
    "kolektorsdd": "daad.loaders.kolektorsdd",
    "ksdd2": "daad.loaders.ksdd2",
    "mpdd": "daad.loaders.mpdd",
    "mtd": "daad.loaders.mtd",
    "mvtec_ad": "daad.loaders.mvtec_ad",
    "mvtec_loco": "daad.loaders.mvtec_loco",
    "neu_seg": "daad.loaders.neu_seg",
    "sd_saliency_900": "daad.loaders.sd_saliency_900",
    "visa": "daad.loaders.visa",
}


def get_loader(origin: str) -> ModuleType:
    """The loader module of ``origin``."""
    try:
        return importlib.import_module(LOADERS[origin])
    except KeyError:
        raise DaadError(f"no loader for origin {origin!r}; known: {', '.join(sorted(LOADERS))}") from None
