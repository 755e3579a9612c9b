"""Errors raised by daad. Each names the record and/or file it concerns."""

from __future__ import annotations

from pathlib import Path


class DaadError(Exception):
    """Base class of every error daad raises on purpose."""

    def __reduce__(self):
        # Subclasses build their message from several arguments: pickle (for worker
        # processes) the message and attributes instead of re-calling ``__init__``.
        return _rebuild, (type(self), str(self), self.__dict__)


def _rebuild(cls: type[DaadError], message: str, state: dict) -> DaadError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ManifestError(DaadError):
    """A manifest line is malformed or inconsistent."""

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


class RecordFileError(DaadError):
    """A record's image or mask file is missing, corrupt or inconsistent.

    ``reason`` is a short machine-readable key (``missing``, ``sha256_mismatch`` ...)
    used to group rejections in reports.
    """

    def __init__(self, record_id: str, path: Path | str | None, reason: str, detail: str = "") -> None:
        self.record_id, self.path, self.reason, self.detail = record_id, path, reason, detail
        where = f" ({path})" if path is not None else ""
        super().__init__(f"{record_id}{where}: {reason}" + (f": {detail}" if detail else ""))


class PathEscapeError(DaadError):
    """A record path points outside its origin's root."""

    reason = "path_escape"

    def __init__(self, record_id: str, path: str, root: Path) -> None:
        self.record_id, self.path, self.root = record_id, path, root
        super().__init__(f"{record_id}: path {path!r} escapes its root {root}")


class RootNotFoundError(DaadError):
    """No root directory is configured for an origin."""

    reason = "no_root"


class MaskMismatchError(DaadError):
    """An image and its mask disagree (size, or the mask is empty). Names both paths.

    ``reason`` is ``mask_size_mismatch`` or ``empty_mask``.
    """

    def __init__(self, image: Path | str, mask: Path | str, reason: str, detail: str) -> None:
        self.image, self.mask, self.reason = image, mask, reason
        super().__init__(f"image {image} and mask {mask}: {detail}")


class LeakageError(DaadError):
    """A generator was handed data that is not guarded against evaluation leakage."""
