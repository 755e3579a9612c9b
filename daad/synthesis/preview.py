"""A contact sheet of target / result / mask triplets, for a person to look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from daad.synthesis.base import Synthesis, Target


def contact_sheet(rows: Sequence[Synthesis], targets: dict[str, Target], path: Path, cell: int = 160) -> Path:
    """Write one line per row: the target, the pseudo-anomaly, its mask (red outline on the result)."""
    lines = []
    for row in rows:
        target = cv2.resize(targets[row.target_id].image, (cell, cell))
        result = cv2.resize(row.image, (cell, cell))
        mask = cv2.resize(row.mask * 255, (cell, cell), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlined = cv2.drawContours(result.copy(), contours, -1, (255, 0, 0), 1)
        lines.append(np.concatenate([target, outlined, np.repeat(mask[..., None], 3, axis=2)], axis=1))
    sheet = np.concatenate(lines, axis=0) if lines else np.zeros((cell, 3 * cell, 3), np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
