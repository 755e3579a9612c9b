"""Reading image bytes safely: regular files only, sha256 pinning, decoding with the
decompression-bomb guard, and the perceptual hash stored on every record.

One convention for every image daad reads (ingest, validate, build, generators,
evaluation), the one ``datasets`` applies when it decodes the built ``image`` column:

- **EXIF orientation is applied.** An image is what a viewer shows: a JPEG tagged
  orientation 6 stored 480x320 is a 320x480 image, and its mask is 320x480.
  ``datasets``, browsers (so the FiftyOne App) and :func:`decode_image` all rotate it.
- **Pixels are read as RGB** with PIL's ``convert("RGB")`` (grey, palette, CMYK and
  RGBA alike; alpha is dropped), which is what the built dataset's ``image`` feature
  (``Image(mode="RGB")``) gives. Images of more than 8 bits a channel (``I;16``, ``I``,
  ``F``) are refused as ``unsupported_mode``: PIL clips them to 255 when converting.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageOps

from daad.errors import RecordFileError

MAX_PIXELS = 64_000_000
"""Images above this many pixels are refused as possible decompression bombs."""
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX", "La", "RGBa"})
"""The modes whose ``convert("RGB")`` keeps every value (wider modes are clipped)."""
_ORIENTATION = 0x0112
_ROTATED = frozenset({5, 6, 7, 8})
"""EXIF orientations that swap width and height."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_regular(fd: int, record_id: str, path: Path | str) -> bytes:
    """The bytes of the open file ``fd`` (closed here) if it is a regular file; a FIFO, device
    or directory raises ``RecordFileError`` (``not_a_file``) instead of blocking the reader.
    Open it with ``O_NONBLOCK`` so that opening a FIFO does not block either."""
    with open(fd, "rb", buffering=0) as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise RecordFileError(record_id, path, "not_a_file", f"is {kind}")
        os.set_blocking(fd, True)
        return f.readall()


def read_file(path: Path, record_id: str) -> bytes:
    """The bytes of the regular file ``path``; ``RecordFileError`` if missing, unreadable or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RecordFileError(record_id, path, "missing", "file does not exist") from None
    except OSError as exc:
        raise RecordFileError(record_id, path, "unreadable", exc.strerror or str(exc)) from None
    return read_regular(fd, record_id, path)


def read_verified(path: Path, sha256: str | None, record_id: str) -> bytes:
    """The bytes of ``path``; raises ``RecordFileError`` if missing, not a regular file, empty or not matching ``sha256``."""
    return verified(read_file(path, record_id), sha256, record_id, path)


def verified(data: bytes, sha256: str | None, record_id: str, path: Path | str | None) -> bytes:
    """``data``, read from ``path``; raises ``RecordFileError`` if empty or not matching ``sha256``."""
    if not data:
        raise RecordFileError(record_id, path, "empty_file", "zero bytes")
    if sha256 is not None:
        actual = sha256_bytes(data)
        if actual != sha256:
            raise RecordFileError(record_id, path, "sha256_mismatch", f"expected {sha256}, found {actual}")
    return data


def decode_image(data: bytes, record_id: str, path: Path | str | None = None) -> Image.Image:
    """Fully decode ``data`` with PIL, EXIF orientation applied; truncated, corrupt, oversized
    and wider-than-8-bit images raise ``RecordFileError``."""
    with image_errors(record_id, path):
        image = _opened(data, record_id, path)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image


def image_size(data: bytes, record_id: str, path: Path | str | None = None) -> tuple[int, int]:
    """``(width, height)`` of the image ``data`` as :func:`decode_image` gives it, from its header
    alone (no pixel decoded), with the checks that need no decoding: it is an image PIL knows,
    not a decompression bomb, 8 bits a channel, and not truncated (PNG: every chunk's CRC;
    JPEG: its end marker; raw pixels: the file's length; else a full decode). Raises ``RecordFileError`` like :func:`decode_image`."""
    if (size := _plain_bmp_size(data)) is not None:
        return size
    with image_errors(record_id, path):
        image = _opened(data, record_id, path)
        width, height = image.size
        if image.format == "PNG":
            image.verify()  # chunk CRCs, IDAT included, without inflating it
            # PIL looks for an eXIf chunk after IDAT by decoding the image: only when there is one
            orientation = Image.open(io.BytesIO(data)).getexif().get(_ORIENTATION) if b"eXIf" in data else None
        else:
            orientation = image.getexif().get(_ORIENTATION)
            if not _looks_complete(image, data):
                image.load()  # no cheap test of completeness: decode it
    return (height, width) if orientation in _ROTATED else (width, height)


def _plain_bmp_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an uncompressed BMP that holds all its pixels and is no bomb, read
    from its 30-byte header; ``None`` for anything else (then PIL decides). PIL spends longer
    building a grey BMP's palette than reading the file, so a build reads this itself."""
    if len(data) < 34 or data[:2] != b"BM":
        return None
    offset, header = struct.unpack_from("<I I", data, 10)
    width, height, planes, bits, compression = struct.unpack_from("<i i H H I", data, 18)
    if header < 40 or compression != 0 or bits not in (1, 4, 8, 24, 32) or width <= 0 or height == 0:
        return None
    height = abs(height)
    stride = (width * bits + 31) // 32 * 4
    if width * height > MAX_PIXELS or len(data) < offset + stride * height:
        return None
    return width, height


def _looks_complete(image: Image.Image, data: bytes) -> bool:
    """Whether ``data`` holds all of ``image``'s pixel data, judged without decoding it: a JPEG
    ends with its end-of-image marker; raw (uncompressed) pixels, as in most BMPs, fit in the file.
    ``False`` means "decode to know"."""
    if image.format in ("JPEG", "MPO"):  # MPO: a phone's JPEG with more pictures after the first
        return data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9")
    if len(image.tile) == 1 and image.tile[0][0] == "raw":
        _, extents, offset, args = image.tile[0]
        stride = args[1] if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int) else 0
        return stride > 0 and len(data) >= offset + stride * (extents[3] - extents[1])
    return False


def _opened(data: bytes, record_id: str, path: Path | str | None) -> Image.Image:
    """``data`` opened (header read) by PIL, refused when too large or wider than 8 bits."""
    image = Image.open(io.BytesIO(data))
    if image.width * image.height > MAX_PIXELS:
        raise RecordFileError(
            record_id, path, "decompression_bomb", f"{image.width}x{image.height} exceeds {MAX_PIXELS} pixels"
        )
    if image.mode not in EIGHT_BIT_MODES:
        raise RecordFileError(
            record_id, path, "unsupported_mode",
            f"mode {image.mode} (more than 8 bits a channel, which PIL and datasets clip); save it as 8-bit",
        )
    return image


@contextmanager
def image_errors(record_id: str, path: Path | str | None, corrupt: str = "corrupt_image") -> Iterator[None]:
    """Turns what PIL raises on bad data into ``RecordFileError`` (``decompression_bomb``, or
    ``corrupt``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except RecordFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RecordFileError(record_id, path, "decompression_bomb", str(exc)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise RecordFileError(record_id, path, corrupt, f"{type(exc).__name__}: {exc}") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """``H x W x 3`` ``uint8`` RGB view of any PIL image (grey and palette images expanded)."""
    return np.asarray(image.convert("RGB"))


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits."""
    return str(imagehash.phash(image.convert("L")))


def image_cell(data: bytes, name: str) -> dict[str, Any]:
    """The storage of a ``datasets.Image`` value: encoded bytes (never re-encoded) and a file name."""
    return {"bytes": data, "path": name}
