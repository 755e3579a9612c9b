"""Licences: the values records carry, what each allows, and build policies over them.

A licence value is an SPDX id (``CC-BY-NC-SA-4.0``), a ``LicenseRef-...`` or
``unknown``. ``manifests/licences.toml`` says for each value in use whether it allows
commercial use, requires attribution / share-alike and lets anyone redistribute the
images (``redistribution``; when absent: yes for an SPDX id, no for ``unknown`` and a
``LicenseRef-...``), with its URL. A
:class:`LicencePolicy` picks the licences a build (or a generator's inputs) may ship:
``all``, ``research`` (every licence with known terms), ``commercial`` (only those
allowing commercial use), ``redistributable`` (only those that let a build be published:
what ``daad push`` accepts), or an explicit comma-separated allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daad.tomlfile import require_toml
from daad.errors import DaadError

UNKNOWN = "unknown"
FILENAME = "licences.toml"
POLICIES = ("all", "research", "commercial", "redistributable")
_SPDX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.-]+$")


class LicenceError(DaadError):
    """The licence catalogue is malformed, a licence is not in it, or a policy is invalid."""


def check_licence(value: object) -> str:
    """Return ``value`` if it is a well-formed licence value, else raise ``ValueError``."""
    if isinstance(value, str) and (
        value == UNKNOWN or (_LICENSE_REF if value.startswith("LicenseRef-") else _SPDX_ID).match(value)
    ):
        return value
    raise ValueError(f"licence {value!r} is not an SPDX id, a LicenseRef-... or {UNKNOWN!r}")


@dataclass(frozen=True, slots=True)
class Licence:
    """What one licence value allows."""

    id: str
    name: str
    url: str
    commercial: bool
    attribution: bool
    share_alike: bool
    redistribution: bool = False
    """Whether copies may be published (``daad push`` refuses the rows of a licence that does not)."""

    def flags(self) -> str:
        """Short human summary: ``commercial, attribution, share-alike`` or their negations."""
        return ", ".join((
            "commercial use" if self.commercial else "non-commercial",
            "attribution required" if self.attribution else "no attribution required",
            *(["share-alike"] if self.share_alike else []),
        ))


class LicenceCatalogue:
    """Every licence of ``manifests/licences.toml``, by id."""

    def __init__(self, licences: dict[str, Licence]) -> None:
        self.licences = dict(sorted(licences.items()))

    @classmethod
    def load(cls, manifests_dir: Path) -> LicenceCatalogue:
        path = Path(manifests_dir) / FILENAME
        raw = require_toml(path, LicenceError, "licence catalogue")
        licences = {}
        for lid, value in raw.items():
            try:
                check_licence(lid)
                flags = {k: value[k] for k in ("commercial", "attribution", "share_alike")}
                if not all(isinstance(v, bool) for v in flags.values()):
                    raise ValueError("commercial, attribution and share_alike must be true or false")
                redistribution = value.get("redistribution", lid != UNKNOWN and not lid.startswith("LicenseRef-"))
                if not isinstance(redistribution, bool):
                    raise ValueError("redistribution must be true or false")
                licences[lid] = Licence(lid, str(value["name"]), str(value.get("url", "")), **flags,
                                        redistribution=redistribution)
            except (KeyError, TypeError, ValueError) as exc:
                raise LicenceError(f"{path}: licence {lid!r}: {exc}") from None
        return cls(licences)

    def __getitem__(self, licence: str) -> Licence:
        try:
            return self.licences[licence]
        except KeyError:
            raise LicenceError(
                f"licence {licence!r} is not in {FILENAME}; add it with its commercial/attribution/share_alike flags"
            ) from None

    def __contains__(self, licence: str) -> bool:
        return licence in self.licences

    def __iter__(self) -> Iterator[Licence]:
        return iter(self.licences.values())

    def restrictions(self, licences: Iterable[str]) -> list[str]:
        """One sentence per restrictive licence among ``licences`` (non-commercial, share-alike, unknown)."""
        lines = []
        for lid in sorted(set(licences)):
            lic = self.licences.get(lid)
            if lic is None or lid == UNKNOWN:
                lines.append(f"`{lid}`: terms not stated; not cleared for redistribution")
            elif not lic.commercial or lic.share_alike:
                lines.append(f"`{lid}`: {lic.flags()}" + (f" ({lic.url})" if lic.url else ""))
        return lines


class LicencePolicy:
    """Which licences a build (or generator output) may ship."""

    def __init__(self, name: str, allowed: frozenset[str] | None) -> None:
        self.name = name
        self._allowed = allowed

    @classmethod
    def everything(cls) -> LicencePolicy:
        return cls("all", None)

    @classmethod
    def parse(cls, spec: str, catalogue: LicenceCatalogue) -> LicencePolicy:
        """``all``, ``research``, ``commercial``, ``redistributable`` or a comma-separated allow-list of licence ids."""
        if spec == "all":
            return cls.everything()
        if spec == "research":
            return cls(spec, frozenset(lic.id for lic in catalogue if lic.id != UNKNOWN))
        if spec == "commercial":
            return cls(spec, frozenset(lic.id for lic in catalogue if lic.commercial and lic.id != UNKNOWN))
        if spec == "redistributable":
            return cls(spec, frozenset(lic.id for lic in catalogue if lic.redistribution and lic.id != UNKNOWN))
        ids = [s.strip() for s in spec.split(",") if s.strip()]
        if not ids:
            raise LicenceError(f"licence policy {spec!r}: expected one of {', '.join(POLICIES)} or licence ids")
        for lid in ids:
            try:
                check_licence(lid)
            except ValueError as exc:
                raise LicenceError(f"licence policy {spec!r}: {exc}") from None
            catalogue[lid]  # an id the catalogue does not know is a typo, not an empty selection
        return cls(",".join(sorted(ids)), frozenset(ids))

    def allows(self, licence: str) -> bool:
        return self._allowed is None or licence in self._allowed

    @property
    def allowed(self) -> list[str] | None:
        """The licences this policy lets in (sorted), ``None`` for all."""
        return None if self._allowed is None else sorted(self._allowed)
