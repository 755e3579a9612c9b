"""EISeg JSON output (the annotation tool the DAAD authors used): a list of objects, each
``{"name": label, "labelIdx": n, "points": [[x, y], ...]}`` in pixel coordinates, one file
per image; the image size comes from the image itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from daad.annotations.labelme import pixel_polygons_mask


class EISegFormatError(ValueError):
    """The file is not EISeg polygon output; names the file and what is wrong."""


def read_eiseg(path: Path, width: int, height: int) -> tuple[np.ndarray, list[str]]:
    """The union mask of the file's polygons, and their label names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(data, dict):  # some versions wrap the list
            data = data.get("shapes", data.get("objects"))
        polygons = [np.asarray(obj["points"], dtype=np.float64).reshape(-1, 2) for obj in data]
        labels = [str(obj.get("name", obj.get("labelIdx", ""))) for obj in data]
        if any(len(p) < 3 for p in polygons):
            raise ValueError("a polygon has fewer than 3 points")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EISegFormatError(f"{path}: not EISeg polygon output ({type(exc).__name__}: {exc})") from None
    return pixel_polygons_mask(polygons, width, height), labels
