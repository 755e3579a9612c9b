"""The registry record: one real anomaly (image + binary mask + provenance).

A record is what one line of ``manifests/<origin>.jsonl`` holds. ``to_json`` gives the
stable key order that manifests are written in; ``from_json`` checks every field and
raises ``ValueError`` with a reason that the manifest reader turns into a
``ManifestError`` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from daad.licences import check_licence
from daad.masks import RLE
from daad.taxonomy import Source, Status, check_class

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PHASH = re.compile(r"^[0-9a-f]{16}$")
_ID = re.compile(r"^[a-z0-9_]+/[^\s]+$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where a record's image bytes are: a path under its origin's root, and/or a URL.

    ``sha256`` pins the bytes; for a URL record it is set on the first successful fetch.
    """

    path: str | None = None
    url: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "url": self.url, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: object) -> ImageRef:
        if not isinstance(value, dict) or set(value) - {"path", "url", "sha256"}:
            raise ValueError("image must be an object with keys path, url, sha256")
        ref = cls(*(_optional(value, key, str, f"image.{key}") for key in ("path", "url", "sha256")))
        if ref.sha256 is not None and not _SHA256.match(ref.sha256):
            raise ValueError(f"image sha256 {ref.sha256!r} is not 64 lowercase hex digits")
        return ref


@dataclass(frozen=True, slots=True)
class Record:
    """One real anomaly of the registry (see DESIGN.md, "The record")."""

    id: str
    anomaly_class: str
    source: Source
    origin: str
    native_label: str
    licence: str
    image: ImageRef
    mask: RLE | None = None
    width: int | None = None
    height: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    area: int | None = None
    phash: str | None = None
    status: Status = Status.ACCEPTED
    reason: str | None = None
    split: str | None = None
    """The origin's own split (``train``/``test``...), when it publishes one."""
    page_url: str | None = None
    note: str | None = None
    curated: tuple[str, ...] = field(default=())
    """Fields set by a curator (``status``, ``anomaly_class``, ``mask``); re-ingest keeps them."""
    weak_mask: bool = False
    """The mask is a coarse region around the anomaly (DAGM 2007's ellipses), not its outline;
    ``daad build --no-weak-masks`` leaves such records out. Written to the manifest only when true."""
    duplicate_of: str | None = None
    """Id of the (kept) record whose image this one's is a near copy of, set by
    ``daad dedup``; a duplicate is left out of builds and views. Absent from the manifest
    line when ``None``."""

    @property
    def native_id(self) -> str:
        return self.id.split("/", 1)[1]

    def with_mask(self, mask: RLE) -> Record:
        """A copy with ``mask`` and the geometry derived from it."""
        return replace(self, mask=mask, width=mask.width, height=mask.height, bbox=mask.bbox(), area=mask.area())

    def to_json(self) -> dict[str, Any]:
        line = {
            "id": self.id,
            "anomaly_class": self.anomaly_class,
            "source": str(self.source),
            "origin": self.origin,
            "native_label": self.native_label,
            "licence": self.licence,
            "status": str(self.status),
            "reason": self.reason,
            "split": self.split,
            "image": self.image.to_json(),
            "width": self.width,
            "height": self.height,
            "bbox": list(self.bbox) if self.bbox is not None else None,
            "area": self.area,
            "phash": self.phash,
            "page_url": self.page_url,
            "note": self.note,
            "curated": list(self.curated),
        }
        if self.duplicate_of is not None:
            line["duplicate_of"] = self.duplicate_of
        line["mask"] = self.mask.to_json() if self.mask is not None else None
        if self.weak_mask:
            line["weak_mask"] = True
        return line

    @classmethod
    def from_json(cls, obj: object, mask_runs: np.ndarray | str | None = None) -> Record:
        """Build and check a record; raises ``ValueError`` naming the offending field.

        ``mask_runs``: the mask's runs as :func:`daad.masks.decode_runs` gave them, where
        the caller decoded many at once."""
        if not isinstance(obj, dict):
            raise ValueError("a record must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("id", "anomaly_class", "source", "origin", "native_label", "licence", "image"):
            if obj.get(key) is None:
                raise ValueError(f"missing required field {key!r}")
        rid = obj["id"]
        if not isinstance(rid, str) or not _ID.match(rid):
            raise ValueError(f"id {rid!r} must look like '<origin>/<native id>'")
        if rid.split("/", 1)[0] != obj["origin"]:
            raise ValueError(f"id {rid!r} does not start with its origin {obj['origin']!r}")
        try:
            source = Source(obj["source"])
        except ValueError:
            raise ValueError(f"unknown source {obj['source']!r}; expected one of {', '.join(Source)}") from None
        try:
            status = Status(obj.get("status") or Status.ACCEPTED)
        except ValueError:
            raise ValueError(f"unknown status {obj['status']!r}; expected one of {', '.join(Status)}") from None
        mask = RLE.from_json(obj["mask"], mask_runs) if obj.get("mask") is not None else None
        bbox = _optional(obj, "bbox", list)
        if bbox is not None and (len(bbox) != 4 or not all(_is_int(v) for v in bbox)):
            raise ValueError(f"bbox must be a list of four integers [x, y, w, h], got {bbox!r}")
        curated = _optional(obj, "curated", list) or []
        if not all(isinstance(v, str) for v in curated):
            raise ValueError(f"curated must be a list of field names, got {curated!r}")
        record = cls(
            id=rid,
            anomaly_class=check_class(obj["anomaly_class"]),
            source=source,
            origin=obj["origin"],
            native_label=_optional(obj, "native_label", str),
            licence=check_licence(obj["licence"]),
            image=ImageRef.from_json(obj["image"]),
            mask=mask,
            width=_optional(obj, "width", int),
            height=_optional(obj, "height", int),
            bbox=tuple(bbox) if bbox is not None else None,
            area=_optional(obj, "area", int),
            phash=_optional(obj, "phash", str),
            status=status,
            reason=_optional(obj, "reason", str),
            split=_optional(obj, "split", str),
            page_url=_optional(obj, "page_url", str),
            note=_optional(obj, "note", str),
            curated=tuple(curated),
            weak_mask=_flag(obj.get("weak_mask", False), "weak_mask"),
            duplicate_of=_optional(obj, "duplicate_of", str),
        )
        record._check_geometry()
        dup = record.duplicate_of
        if dup is not None and (not isinstance(dup, str) or not _ID.match(dup) or dup == record.id):
            raise ValueError(f"duplicate_of {dup!r} must be the id of another record")
        if record.phash is not None and not _PHASH.match(record.phash):
            raise ValueError(f"phash {record.phash!r} is not 16 hex digits")
        if status is Status.ACCEPTED and mask is None:
            raise ValueError("an accepted record needs a mask")
        image = record.image
        if image.path is None and image.url is None and image.sha256 is None and status is not Status.NEEDS_IMAGE:
            # Only a record still waiting for its image (a page to pick from, an own photo not
            # yet added) may say nothing of it; an inline image lives in the fetch cache by sha256.
            raise ValueError("image needs a path, a url or a sha256 (fetch cache)")
        return record

    def _check_geometry(self) -> None:
        if self.mask is None:
            return
        if (self.height, self.width) != (self.mask.height, self.mask.width):
            raise ValueError(
                f"width/height {self.width}x{self.height} disagree with the mask size "
                f"{self.mask.width}x{self.mask.height}"
            )
        if self.bbox is not None and tuple(self.bbox) != self.mask.bbox():
            raise ValueError(f"bbox {list(self.bbox)} disagrees with the mask's {list(self.mask.bbox())}")
        if self.area is not None and self.area != self.mask.area():
            raise ValueError(f"area {self.area} disagrees with the mask's {self.mask.area()}")


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(obj: dict, key: str, kind: type, name: str | None = None) -> Any:
    """``obj[key]`` when it is ``None`` or of type ``kind``; ``ValueError`` naming the field otherwise."""
    value = obj.get(key)
    if value is None or (_is_int(value) if kind is int else isinstance(value, kind)):
        return value
    raise ValueError(f"{name or key} must be {_TYPE_NAMES[kind]}, got {value!r}")


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value
