"""What the benchmark scripts share: the checkout, and the real sources beside it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("DAAD_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCE_ROOTS = {
    "sd_saliency_900": SHARED / "sd-saliency-900",
    "crackforest": SHARED / "crackforest",
    "kolektorsdd": SHARED / "kolektorsdd-yolo",
}
