"""A contact sheet of target / result / mask triplets, for a person to look at.

Rows are sampled across the whole output (evenly spaced over the targets, plus the first
row of every class not yet shown), each image keeps its aspect ratio, and every line is
labelled with the row's class, target and the real anomalies it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.synthesis.base import Synthesis, Target

LABEL_HEIGHT = 18


class PreviewSampler:
    """Chooses which of ``total`` streamed rows go on the sheet: ``rows`` evenly spaced ones,
    and the first row of each class not among them (so every class is shown)."""

    def __init__(self, rows: int, total: int) -> None:
        self.wanted = set(np.linspace(0, max(total - 1, 0), rows).round().astype(int).tolist()) if rows else set()
        self.kept: list[Synthesis] = []
        self._classes: set[str] = set()
        self._seen = 0

    def offer(self, row) -> None:
        """Look at the next row (a :class:`Synthesis` or anything with ``decode()``)."""
        index, self._seen = self._seen, self._seen + 1
        cls = row.anomaly_class
        if index in self.wanted or cls not in self._classes:
            self.kept.append(row.decode() if hasattr(row, "decode") else row)
            self._classes.add(cls)


def contact_sheet(rows: Sequence[Synthesis], targets: dict[str, Target], path: Path, cell: int = 160) -> Path:
    """Write one labelled line per row: the target, the pseudo-anomaly with its mask outlined
    in red, and the mask; each image fitted into a ``cell`` square with its aspect kept."""
    lines = []
    for row in rows:
        target = fit_cell(targets[row.target_id].image, cell)
        mask = fit_cell(np.repeat(row.mask[..., None] * 255, 3, axis=2), cell, cv2.INTER_NEAREST)
        line = np.concatenate([target, outline(fit_cell(row.image, cell), mask[..., 0]), mask], axis=1)
        text = f"{row.anomaly_class} | target {row.target_id} | from {', '.join(row.source_ids) or '-'}"
        lines.append(np.concatenate([label_strip(text, line.shape[1]), line], axis=0))
    sheet = np.concatenate(lines, axis=0) if lines else np.zeros((cell, 3 * cell, 3), np.uint8)
    path = Path(path)
    write_atomically(path, [png_bytes(sheet)])
    return path


def png_bytes(sheet: np.ndarray) -> bytes:
    """The RGB ``sheet`` as PNG bytes."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DaadError("could not encode the sheet as PNG")
    return data.tobytes()


def outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of the RGB ``image`` with the outline of ``mask`` (same size, 255 = anomaly; the grey
    128 that :func:`fit_cell` pads with is not) in red."""
    contours, _ = cv2.findContours((mask > 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(image.copy(), contours, -1, (255, 0, 0), 1)


def label_strip(text: str, width: int) -> np.ndarray:
    """A white ``LABEL_HEIGHT`` x ``width`` strip with ``text`` in black (cut to what fits)."""
    strip = np.full((LABEL_HEIGHT, width, 3), 255, np.uint8)
    fits = max(1, width // 7)
    cv2.putText(strip, text[:fits], (3, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def fit_cell(image: np.ndarray, cell: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """``image`` scaled to fit a ``cell`` x ``cell`` grey square, aspect kept, centred."""
    height, width = image.shape[:2]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=interpolation)
    canvas = np.full((cell, cell, 3), 128, np.uint8)
    top, left = (cell - size[1]) // 2, (cell - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = small
    return canvas
