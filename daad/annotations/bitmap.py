"""Bitmap masks as sources publish them: PNG/BMP files whose bright pixels are the anomaly.

Binarisation, one rule for every reader: a pixel is anomaly when its value is at least
half the range, ``>= 128`` for 8-bit masks (``threshold=127``; ``>= 32768`` for 16-bit
ones); colour masks are read as grey. A mask whose colour is flat but whose alpha varies
(drawn as transparency) is read from its alpha. EXIF orientation is applied, as for
images (:mod:`daad.images`). Loaders of published label images with small values (VisA:
1, 2 ...) pass ``threshold=0``; those whose value names the defect (MVTec LOCO, AutoVI) read
the values themselves with :func:`read_values`.

:func:`read_bitmap` also says when a mask needs a person's look
(:meth:`BitmapMask.review`): more than two values (a JPEG-saved or soft mask, a
gradient), or covering most of the image (inverted, or all ones).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from daad.errors import RecordFileError
from daad.images import MAX_PIXELS, image_errors, read_file

MOSTLY = 0.5
"""A mask covering more than this share of its image is reported for review."""


@dataclass(frozen=True, slots=True)
class BitmapMask:
    """A mask file binarised: the 0/1 mask, how many values its source channel held, and which channel."""

    mask: np.ndarray
    levels: int
    channel: str
    """``grey`` or ``alpha``."""

    def review(self) -> str | None:
        """Why a person should look at this mask before it is used, or ``None``."""
        if self.levels > 2:
            return (
                f"mask_not_binary: its {self.channel} holds {self.levels} values, not two "
                "(saved lossy, soft or a gradient?); binarised at half the range"
            )
        cover = float(self.mask.mean()) if self.mask.size else 0.0
        if cover > MOSTLY:
            return f"mask_covers_most: {cover:.0%} of the image is anomaly (inverted, or all ones?)"
        return None


def read_bitmap(path: Path, *, threshold: int = 127, record_id: str | None = None) -> BitmapMask:
    """The binarised mask of the image file ``path`` (see the module docstring).

    ``threshold`` is for 8-bit values (scaled for 16-bit ones). Raises ``RecordFileError``
    naming ``record_id`` (or the file) when the file is not a regular file, not an image,
    or a decompression bomb."""
    values, channel = read_values(path, record_id=record_id)
    if values.dtype == np.uint16 or values.max(initial=0) > 255:
        cut = (threshold + 1) * 256 - 1
    else:
        cut = threshold
    levels = len(np.unique(values)) if values.size <= 1 << 22 else len(np.unique(values[:: max(1, values.size >> 22)]))
    return BitmapMask((values > cut).astype(np.uint8), levels, channel)


def read_values(path: Path, *, record_id: str | None = None) -> tuple[np.ndarray, str]:
    """The values of a mask file before binarisation (grey, or alpha; see :func:`read_bitmap`), and
    which channel they come from: what readers of label images (LOCO's one value per defect) look up.
    Raises ``RecordFileError`` as :func:`read_bitmap` does."""
    who = record_id or str(path)
    data = read_file(Path(path), who)
    with image_errors(who, path, "corrupt_mask"), Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > MAX_PIXELS:
            raise RecordFileError(
                who, path, "decompression_bomb", f"mask {image.width}x{image.height} exceeds {MAX_PIXELS} pixels"
            )
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _channel(image)


def _channel(image: Image.Image) -> tuple[np.ndarray, str]:
    """The values to binarise: the alpha when the colour is flat and the alpha is not, else grey."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = np.asarray(image.getchannel("A"))
        colour = np.asarray(image.convert("RGB"))
        if (colour == colour.flat[:3]).all() and alpha.min() != alpha.max():
            return alpha, "alpha"
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image).astype(np.uint16, copy=False), "grey"
    return np.asarray(image.convert("L")), "grey"


def read_mask(path: Path, *, threshold: int = 127) -> np.ndarray:
    """``uint8`` 0/1 mask of the pixels above ``threshold`` (see :func:`read_bitmap`)."""
    return read_bitmap(path, threshold=threshold).mask
