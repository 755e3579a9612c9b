"""The ``datasets.Features`` of the built registry dataset."""

from __future__ import annotations

import datasets

from daad.taxonomy import ANOMALY_CLASSES

REGISTRY_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Image(mode="RGB"),  # decoded as daad's readers decode it (daad.images)
        "mask": datasets.Image(),
        "anomaly_class": datasets.ClassLabel(names=list(ANOMALY_CLASSES)),
        "source": datasets.Value("string"),
        "origin": datasets.Value("string"),
        "native_label": datasets.Value("string"),
        "licence": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "bbox": datasets.List(datasets.Value("int32"), length=4),
        "area": datasets.Value("int64"),
        "phash": datasets.Value("string"),
        "image_sha256": datasets.Value("string"),
        "split": datasets.Value("string"),
        "url": datasets.Value("string"),
        "page_url": datasets.Value("string"),
    }
)
