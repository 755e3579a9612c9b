"""LabelMe JSON (one file per image: ``shapes`` with ``label``, ``points`` in pixels and
``shape_type`` polygon / rectangle / circle) rasterised into one binary mask."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from daad.annotations.yolo_seg import Polygon, rasterise


class LabelMeFormatError(ValueError):
    """The file is not a LabelMe annotation; names the file and what is wrong."""


def pixel_polygons_mask(polygons: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Union of filled polygons given in pixel coordinates (``N x 2`` ``x, y``)."""
    scale = np.array([width, height], dtype=np.float64)
    return rasterise([Polygon(0, np.asarray(p, dtype=np.float64) / scale) for p in polygons], width, height)


def read_labelme(path: Path) -> tuple[np.ndarray, list[str]]:
    """The mask of every shape in the file, and the shapes' labels."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        width, height = int(data["imageWidth"]), int(data["imageHeight"])
        polygons, labels, circles = [], [], []
        for shape in data["shapes"]:
            points = np.asarray(shape["points"], dtype=np.float64)
            kind = shape.get("shape_type") or "polygon"
            if kind == "rectangle":
                (x0, y0), (x1, y1) = points[:2]
                points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            elif kind == "circle":
                circles.append((points[0], float(np.linalg.norm(points[1] - points[0]))))
                labels.append(shape["label"])
                continue
            elif kind != "polygon" or len(points) < 3:
                raise ValueError(f"shape_type {kind!r} with {len(points)} points is not an area")
            polygons.append(points)
            labels.append(shape["label"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LabelMeFormatError(f"{path}: not a LabelMe annotation ({type(exc).__name__}: {exc})") from None
    mask = pixel_polygons_mask(polygons, width, height)
    for centre, radius in circles:
        cv2.circle(mask, tuple(int(round(v)) for v in centre), int(round(radius)), 1, thickness=-1)
    return mask, labels
