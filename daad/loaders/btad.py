"""BTAD (BeanTech Anomaly Detection): three industrial products.

Published as ``btad.zip`` (https://avires.dimi.uniud.it/papers/btad/btad.zip), whose folder
``BTech_Dataset_transformed`` holds an MVTec-style tree read by the shared
:mod:`daad.loaders.mvtec_layout` reader: ``<product>/{train,test}/ok`` (defect-free),
``<product>/test/ko/NNNN.<ext>`` (defective) and ``<product>/ground_truth/ko/NNNN.<ext>``
(0/255, no ``_mask`` suffix). The file types differ per product: ``01`` BMP images and PNG
masks, ``02`` PNG images and masks, ``03`` BMP images and BMP masks; the catalogue's layout
table lists both mask types. Ids ``btad/<product>/ko/NNNN``; native label ``<product>/ko``
(no defect type is published).

License:
    CC BY-SA 4.0 (https://github.com/pankajmishra000/VT-ADL, "License type: CC-BY-SA").

Reference:
    Mishra, P., Verk, R., Fornasier, D., Piciarelli, C., Foresti, G. L. "VT-ADL: A Vision
    Transformer Network for Image Anomaly Detection and Localization." ISIE 2021.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.registry.catalogue import SourceEntry
from daad.loaders import mvtec_layout
from daad.loaders.base import NormalImage, Skipped
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "btad"


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per ``test/ko`` image with its ``ground_truth/ko`` mask (PNG or BMP)."""
    return mvtec_layout.iter_records(root, entry or catalogue_entry(ORIGIN))


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/ok`` and ``test/ok`` of every product."""
    return mvtec_layout.iter_normals(root, catalogue_entry(ORIGIN))
