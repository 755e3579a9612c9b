"""Licence values of records: SPDX identifiers, ``LicenseRef-...`` or ``unknown``."""

from __future__ import annotations

import re

UNKNOWN = "unknown"
_SPDX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.-]+$")


def check_licence(value: object) -> str:
    """Return ``value`` if it is a well-formed licence value, else raise ``ValueError``."""
    if isinstance(value, str) and (value == UNKNOWN or _LICENSE_REF.match(value) or _SPDX_ID.match(value)):
        return value
    raise ValueError(f"licence {value!r} is not an SPDX id, a LicenseRef-... or {UNKNOWN!r}")


class LicencePolicy:
    """Which licences a build (or generator output) may ship."""

    def __init__(self, name: str, allowed: frozenset[str] | None) -> None:
        self.name = name
        self._allowed = allowed

    @classmethod
    def everything(cls) -> LicencePolicy:
        return cls("all", None)

    def allows(self, licence: str) -> bool:
        return self._allowed is None or licence in self._allowed
