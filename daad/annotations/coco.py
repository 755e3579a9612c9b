"""COCO instance annotations (a ``.json`` with ``images``, ``annotations``, ``categories``):
one binary mask per image, the union of its instances' polygons or RLEs (pycocotools)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils


class CocoFormatError(ValueError):
    """The file is not COCO instance annotations; names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class CocoImage:
    file_name: str
    width: int
    height: int
    mask: np.ndarray
    """``uint8`` 0/1 union of the image's instances."""
    categories: tuple[str, ...]
    """The category names of its instances, in annotation order."""


def _segmentation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
        return mask_utils.decode(mask_utils.merge(rles))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        counts = counts.encode() if isinstance(counts, str) else counts
        return mask_utils.decode({"size": segmentation["size"], "counts": counts})
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


def read_coco(path: Path) -> dict[str, CocoImage]:
    """Every annotated image of a COCO file, by ``file_name``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        images = {img["id"]: img for img in data["images"]}
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        masks: dict[int, np.ndarray] = {}
        names: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            img = images[ann["image_id"]]
            mask = _segmentation_mask(ann["segmentation"], img["height"], img["width"])
            masks[img["id"]] = masks[img["id"]] | mask if img["id"] in masks else mask
            names.setdefault(img["id"], []).append(categories.get(ann.get("category_id"), ""))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CocoFormatError(f"{path}: not COCO instance annotations ({type(exc).__name__}: {exc})") from None
    return {
        images[i]["file_name"]: CocoImage(images[i]["file_name"], images[i]["width"], images[i]["height"],
                                          np.ascontiguousarray(m, dtype=np.uint8), tuple(names[i]))
        for i, m in masks.items()
    }
