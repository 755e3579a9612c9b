"""Reading the registry's TOML files (catalogue, downloads, collections, licences, exclusions, config)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from daad.errors import DaadError


def read_toml(path: Path, error: type[DaadError]) -> dict | None:
    """The table in ``path``, or ``None`` where there is no such file; a file that is not valid
    UTF-8 TOML raises ``error`` naming it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {exc}") from None


def require_toml(path: Path, error: type[DaadError], what: str) -> dict:
    """The table in ``path``, which must exist (``error``: "no <what> at <path>")."""
    raw = read_toml(path, error)
    if raw is None:
        raise error(f"no {what} at {path}")
    return raw
