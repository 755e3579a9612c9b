"""MVTec AD: 15 categories of industrial objects and textures, 73 defect types.

Published layout (per category): ``<category>/train/good/NNN.png`` (defect-free),
``<category>/test/<type>/NNN.png`` (``good`` or a defect type) and
``<category>/ground_truth/<type>/NNN_mask.png`` (0/255), read by the shared
:mod:`daad.loaders.mvtec_layout` reader. Records: one per defective test image, id
``mvtec_ad/<category>/<type>/NNN``, native label ``<category>/<type>``.
The catalogue maps all 73 types; functional and logical ones (``bent_wire``,
``cable_swap``, ``misplaced`` ...) map to ``unmapped``.

Download: ``mvtec_anomaly_detection.tar.xz`` from the URL and sha256 that anomalib
(``MVTecAD``'s ``DOWNLOAD_INFO``) uses; the manifest is written at download time.

License:
    CC BY-NC-SA 4.0 (https://www.mvtec.com/company/research/datasets/mvtec-ad);
    not for commercial use: accepted by name (``--accept-licence CC-BY-NC-SA-4.0``).

Reference:
    Bergmann, P., Batzner, K., Fauser, M., Sattlegger, D., Steger, C. "The MVTec Anomaly
    Detection Dataset: A Comprehensive Real-World Dataset for Unsupervised Anomaly
    Detection." IJCV 129, 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.registry.catalogue import SourceEntry
from daad.loaders import mvtec_layout
from daad.loaders.base import NormalImage, Skipped
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "mvtec_ad"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per defective test image with its ground-truth mask."""
    return mvtec_layout.iter_records(root, entry or catalogue_entry(ORIGIN))


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/good`` and ``test/good`` of every category."""
    return mvtec_layout.iter_normals(root, catalogue_entry(ORIGIN))
