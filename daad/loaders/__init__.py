"""One module per source: each reads a dataset as its authors publish it.

``LOADERS`` maps an origin id to its module; every module exposes
``iter_records(root, entry=None)`` and ``iter_normals(root)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from daad.errors import DaadError

LOADERS: dict[str, str] = {
    "crackforest": "daad.loaders.crackforest",
    "kolektorsdd": "daad.loaders.kolektorsdd",
    "sd_saliency_900": "daad.loaders.sd_saliency_900",
}


def get_loader(origin: str) -> ModuleType:
    """The loader module of ``origin``."""
    try:
        return importlib.import_module(LOADERS[origin])
    except KeyError:
        raise DaadError(f"no loader for origin {origin!r}; known: {', '.join(sorted(LOADERS))}") from None
