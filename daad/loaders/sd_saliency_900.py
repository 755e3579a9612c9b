"""SD-saliency-900: surface defects of hot-rolled strip steel.

900 grey 200x200 BMP images, 300 of each defect type: inclusion (``In``), patches
(``Pa``) and scratches (``Sc``), each with a 0/255 PNG ground-truth mask. Published as
``Source Images/{In,Pa,Sc}_N.bmp`` and ``Ground truth/{In,Pa,Sc}_N.png`` (folder names
with spaces) in https://github.com/SongGuorong/MCITF. The dataset has no normal images.

DAAD classes (catalogue): In -> impurity, Pa -> stain, Sc -> scratch.

License:
    None stated by the authors; the images are shared for research use with citation.
    Recorded as ``LicenseRef-SD-saliency-900-research`` (not cleared for commercial use).

Reference:
    Song, G., Song, K., Yan, Y. "Saliency detection for strip steel surface defects using
    multiple constraints and improved texture features." Optics and Lasers in
    Engineering 128 (2020). And "EDRNet: Encoder-Decoder Residual Network for Salient
    Object Detection of Strip Steel Surface Defects." IEEE TIM 69(12) (2020).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "sd_saliency_900"
NATIVE_TYPES = ("In", "Pa", "Sc")
IMAGE_DIR = "Source Images"
MASK_DIR = "Ground truth"
_NAME = re.compile(r"^(In|Pa|Sc)_(\d+)$")


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per image of ``root/Source Images`` with its ``Ground truth`` mask."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for image_path in sorted((root / IMAGE_DIR).glob("*.bmp")):
        match = _NAME.match(image_path.stem)
        if match is None:
            yield Skipped(f"{ORIGIN}/{image_path.stem}", image_path, "unexpected_name")
            continue
        mask_path = root / MASK_DIR / f"{image_path.stem}.png"
        if not mask_path.is_file():
            yield Skipped(f"{ORIGIN}/{image_path.stem}", image_path, "no_annotation", f"{mask_path} missing")
            continue
        with Image.open(mask_path) as mask_image:
            mask = np.asarray(mask_image.convert("L")) > 127
        yield record_or_skip(entry, image_path.stem, match.group(1), image_path, root, mask, mask_path=mask_path)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """SD-saliency-900 publishes no defect-free images."""
    return iter(())
