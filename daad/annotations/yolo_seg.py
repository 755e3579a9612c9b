"""YOLO segmentation labels: one polygon per line, ``class x1 y1 x2 y2 ...`` with
coordinates normalised to 0..1. Several lines may share an image; an empty file means
the image has no object (for defect datasets: a normal image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices


class YoloFormatError(ValueError):
    """A label line is not ``class x y x y ...`` with at least three points; names file and line."""


@dataclass(frozen=True, slots=True)
class Polygon:
    class_id: int
    points: np.ndarray
    """``N x 2`` normalised ``(x, y)``."""

    def pixels(self, width: int, height: int) -> np.ndarray:
        """Vertices in pixel coordinates (pixel centres at integer + 0.5 edges)."""
        return self.points * np.array([width, height], dtype=np.float64)

    def perimeter(self, width: int, height: int) -> float:
        """Length of the closed outline in pixels."""
        pts = self.pixels(width, height)
        return float(np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum())

    def area(self, width: int, height: int) -> float:
        """Shoelace area in pixels."""
        x, y = self.pixels(width, height).T
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def read_polygons(path: Path) -> list[Polygon]:
    """Every polygon of a label file (empty list for an empty file)."""
    polygons = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            class_id, coords = int(values[0]), np.array(values[1:], dtype=np.float64)
        except ValueError:
            raise YoloFormatError(f"{path}:{lineno}: not numbers") from None
        if coords.size < 6 or coords.size % 2:
            raise YoloFormatError(f"{path}:{lineno}: needs an even number of coordinates, at least 3 points")
        polygons.append(Polygon(class_id, coords.reshape(-1, 2)))
    return polygons


def rasterise(polygons: list[Polygon], width: int, height: int) -> np.ndarray:
    """``height x width`` ``uint8`` 0/1 mask, the union of the filled polygons."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if polygons:
        # Vertices are edges in pixel units; cv2 samples pixel centres, hence the -0.5.
        pts = [np.round((p.pixels(width, height) - 0.5) * (1 << _SHIFT)).astype(np.int32) for p in polygons]
        cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask
