"""The DAAD authors' list of their online-search and self-photographed anomalies.

``source of real anomalies.xlsx`` from https://github.com/HU13-SVG/Cross-domain-Anomaly-Injection:
one sheet per DAAD class (``crack`` ... ``abrasion``; column A a row number, column B
the source; row 1 is data, not a header) plus ``Existing_datasets`` naming the 9 public
datasets DAAD drew from (in the catalogue as ``in_daad_paper``). Column B mixes:

- direct image URLs, some without their scheme (``baidu.com/it/u=...``);
- search-engine result pages whose image sits in a ``mediaurl=`` / ``objurl=`` /
  ``imgurl=`` query parameter (percent-encoded): the image URL is extracted;
- article pages holding several images (listed once per image): kept as ``page_url``;
- page titles whose hyperlink holds the URL (the hyperlink is used);
- ``data:image/jpeg;base64,...`` cells: decoded offline into the fetch cache by sha256
  (status ``needs_mask``); one is cut at Excel's 32767-character cell limit;
- ``reality ohotographing`` (sic): the authors' own photos, source ``reality_photo``;
- plain-text titles without a link: kept as notes (``Skipped`` with reason ``note``).

Rows naming the same image or page as an earlier row of the same sheet are merged into
it (``Skipped`` with reason ``duplicate_row``; the record's note counts them). Every row
is accounted for: records + merged duplicates + notes = rows, per class. URL records
have status ``needs_image`` until ``daad fetch`` downloads them; no record has a mask yet.

License:
    The list carries no licence; the images behind the URLs belong to their owners
    (``unknown``: not cleared for redistribution or commercial use).

Reference:
    Cross-domain Anomaly Injection / DAAD (see ``../shared/papers/cai-daad-cdm.txt`` and
    the catalogue's citation).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import openpyxl

from daad.registry.catalogue import SourceEntry
from daad.errors import RecordFileError
from daad.images import decode_image, perceptual_hash, sha256_bytes
from daad.loaders.base import NormalImage, Skipped
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import ImageRef, Record
from daad.registry.roots import fetched_image_path
from daad.taxonomy import ANOMALY_CLASSES, Source, Status

ORIGIN = "daad_online_sources"
WORKBOOK = "source of real anomalies.xlsx"
DATASETS_SHEET = "Existing_datasets"
IMAGE_PARAMS = ("mediaurl", "objurl", "imgurl")
REALITY_PHOTO = re.compile(r"^reality\s+(photographing|ohotographing)$", re.IGNORECASE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
_BARE_URL = re.compile(r"^[\w-]+(\.[\w-]+)+/\S*$")
_IMAGE_HOST = re.compile(r"(^|\.)(mm\.bing\.net|bing\.net)$|(^|\.)baidu\.com$")


@dataclass(frozen=True, slots=True)
class Cell:
    """What one row of a class sheet points at."""

    kind: str
    """``image_url``, ``page``, ``inline``, ``reality_photo`` or ``note``."""
    url: str | None = None
    data: bytes | None = None
    text: str = ""

    @property
    def key(self) -> str:
        """Rows with equal keys name the same thing and are merged."""
        if self.kind == "inline":
            return "inline:" + sha256_bytes(self.data or b"")
        return f"{self.kind}:{self.url}" if self.url else f"{self.kind}:{self.text}"


def with_scheme(url: str) -> str:
    """``url`` with ``https://`` added where the scheme is missing (``baidu.com/it/...``)."""
    url = url.strip()
    if url.startswith("//"):
        return "https:" + url
    return url if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) else "https://" + url


def image_param(url: str) -> str | None:
    """The image URL a search-result link carries in ``mediaurl=``/``objurl=``/``imgurl=``."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    lowered = {k.lower(): v for k, v in query.items()}
    for name in IMAGE_PARAMS:
        for value in lowered.get(name, ()):
            if value.strip():
                return with_scheme(value)
    return None


def is_image_url(url: str) -> bool:
    """Whether ``url`` serves an image itself (by file suffix or a known thumbnail host)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.path.lower().endswith(IMAGE_SUFFIXES):
        return True
    return bool(_IMAGE_HOST.search(host)) and (parts.path.startswith("/th") or parts.path.startswith("/it/"))


def classify(value: object, hyperlink: str | None) -> Cell:
    """Read one column-B cell (and its hyperlink target, if any)."""
    text = "" if value is None else str(value).strip()
    if text.startswith("data:image/"):
        _, _, payload = text.partition(",")
        try:
            return Cell("inline", data=base64.b64decode(payload + "=" * (-len(payload) % 4)), text=text[:40])
        except (binascii.Error, ValueError):
            return Cell("inline", data=b"", text=text[:40])
    if REALITY_PHOTO.match(text):
        return Cell("reality_photo", text=text)
    if re.match(r"^https?://", text, re.IGNORECASE) or _BARE_URL.match(text):
        candidate = with_scheme(text)
    elif hyperlink:
        candidate = with_scheme(hyperlink)
    else:
        return Cell("note", text=text)
    image = image_param(candidate)
    if image is not None:
        return Cell("image_url", url=image, text=text)
    return Cell("image_url" if is_image_url(candidate) else "page", url=candidate, text=text)


def _rows(root: Path) -> Iterator[tuple[str, int, Cell]]:
    workbook = openpyxl.load_workbook(Path(root) / WORKBOOK)  # not read-only: hyperlinks are needed
    try:
        for sheet in workbook.worksheets:
            if sheet.title == DATASETS_SHEET:
                continue
            for row in sheet.iter_rows(min_col=1, max_col=2):
                if row[1].value is None and row[0].value is None:
                    continue
                link = row[1].hyperlink.target if row[1].hyperlink is not None else None
                yield sheet.title.strip(), row[1].row, classify(row[1].value, link)
    finally:
        workbook.close()


def existing_datasets(root: Path) -> list[str]:
    """The dataset names of the ``Existing_datasets`` sheet, as spelled there (serial > 0)."""
    workbook = openpyxl.load_workbook(Path(root) / WORKBOOK, read_only=True)
    try:
        rows = list(workbook[DATASETS_SHEET].iter_rows(min_row=2, values_only=True))
    finally:
        workbook.close()
    return [str(name).strip() for name, serial in rows if name is not None and serial not in (None, 0, "0")]


def _store_inline(data: bytes) -> str:
    """Put inline image bytes into the fetch cache (atomically); returns their sha256."""
    digest = sha256_bytes(data)
    dest = fetched_image_path(digest)
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".inline.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    return digest


def _record(entry: SourceEntry, anomaly_class: str, row: int, cell: Cell, repeats: int) -> Record:
    rid = f"{ORIGIN}/{anomaly_class}/{row:04d}"
    note = f"listed on {repeats} rows of the sheet" if repeats > 1 else None
    base = Record(
        id=rid, anomaly_class=entry.map_class(anomaly_class), source=Source.ONLINE_SEARCH, origin=ORIGIN,
        native_label=anomaly_class, licence=entry.licence, image=ImageRef(), status=Status.NEEDS_IMAGE,
    )
    notes = [n for n in (note,) if n]
    if cell.kind == "image_url":
        return _replace(base, image=ImageRef(url=cell.url), notes=notes)
    if cell.kind == "page":
        return _replace(base, page_url=cell.url, reason="page_holds_several_images",
                        notes=["pick the image from the page", *notes])
    if cell.kind == "reality_photo":
        return _replace(base, source=Source.REALITY_PHOTO, reason="own_photo_not_published",
                        notes=[f"sheet says {cell.text!r}: the authors' own photograph", *notes])
    # inline data: image
    try:
        image = decode_image(cell.data or b"", rid)
    except RecordFileError as exc:
        return _replace(base, reason=f"inline_{exc.reason}",
                        notes=[f"inline data: image cannot be decoded ({exc.detail[:80]})", *notes])
    digest = _store_inline(cell.data or b"")
    return _replace(
        base, image=ImageRef(sha256=digest), status=Status.NEEDS_MASK, width=image.width, height=image.height,
        phash=perceptual_hash(image), notes=["inline data: image in the sheet", *notes],
    )


def _replace(record: Record, *, notes: list[str], **changes) -> Record:
    return replace(record, note="; ".join(notes) or None, **changes)


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per distinct image / page / own photo of each class sheet; the rest as ``Skipped``."""
    entry = entry or catalogue_entry(ORIGIN)
    first: dict[tuple[str, str], tuple[str, int, Cell]] = {}
    repeats: dict[tuple[str, str], int] = {}
    skipped: list[Skipped] = []
    for sheet, row, cell in _rows(root):
        if sheet not in ANOMALY_CLASSES:
            skipped.append(Skipped(f"{ORIGIN}/{sheet}/{row:04d}", None, "unknown_sheet", sheet))
            continue
        if cell.kind == "note":
            skipped.append(Skipped(f"{ORIGIN}/{sheet}/{row:04d}", None, "note", cell.text))
            continue
        key = (sheet, cell.key) if cell.kind != "reality_photo" else (sheet, f"reality_photo:{row}")
        if key in first:
            repeats[key] += 1
            skipped.append(Skipped(f"{ORIGIN}/{sheet}/{row:04d}", None, "duplicate_row",
                                   f"same as {ORIGIN}/{sheet}/{first[key][1]:04d}"))
            continue
        first[key] = (sheet, row, cell)
        repeats[key] = 1
    for key, (sheet, row, cell) in first.items():
        yield _record(entry, sheet, row, cell, repeats[key])
    yield from skipped


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """The list holds anomalies only."""
    return iter(())
