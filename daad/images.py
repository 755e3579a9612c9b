"""Reading image bytes safely: sha256 pinning, decoding with the decompression-bomb guard,
and the perceptual hash stored on every record."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from daad.errors import RecordFileError

MAX_PIXELS = 64_000_000
"""Images above this many pixels are refused as possible decompression bombs."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified(path: Path, sha256: str | None, record_id: str) -> bytes:
    """The bytes of ``path``; raises ``RecordFileError`` if missing, empty or not matching ``sha256``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordFileError(record_id, path, "missing", "file does not exist") from None
    except IsADirectoryError:
        raise RecordFileError(record_id, path, "missing", "is a directory") from None
    return verified(data, sha256, record_id, path)


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
    """Fully decode ``data`` with PIL; truncated, corrupt and oversized images raise ``RecordFileError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise RecordFileError(
                    record_id, path, "decompression_bomb",
                    f"{image.width}x{image.height} exceeds {MAX_PIXELS} pixels",
                )
            image.load()
    except RecordFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RecordFileError(record_id, path, "decompression_bomb", str(exc)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise RecordFileError(record_id, path, "corrupt_image", f"{type(exc).__name__}: {exc}") from None
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """``H x W x 3`` ``uint8`` RGB view of any PIL image (grey and palette images expanded)."""
    return np.asarray(image.convert("RGB"))


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits."""
    return str(imagehash.phash(image.convert("L")))
