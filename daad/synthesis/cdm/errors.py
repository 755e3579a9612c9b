"""Errors of CDM training and sampling; each names the folder or file it concerns."""

from __future__ import annotations

from daad.errors import DaadError


class CDMDataError(DaadError):
    """The training data (a CAI output dataset) cannot train CDM: no rows, unknown class ..."""


class CDMCheckpointError(DaadError):
    """A CDM checkpoint folder is missing a file, or does not match what it is used with."""
