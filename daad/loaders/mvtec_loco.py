"""MVTec LOCO AD: five categories with structural and logical anomalies.

Published layout: ``<category>/{train,validation}/good/NNN.png``, ``<category>/test/
{good,logical_anomalies,structural_anomalies}/NNN.png`` and one ground-truth folder per
defective image, ``<category>/ground_truth/<type>/NNN/000.png, 001.png ...``: one mask
per defect (several per image; their values come from ``defects_config.json``, any
non-zero pixel is the defect). A record's mask is their union. Ids
``mvtec_loco/<category>/<type>/NNN``; native label ``<category>/<type>``. Logical
anomalies (a missing or extra part) fit no DAAD class and are unmapped.

License:
    CC BY-NC-SA 4.0 (https://www.mvtec.com/company/research/datasets/mvtec-loco);
    not for commercial use.

Reference:
    Bergmann, P., Batzner, K., Fauser, M., Sattlegger, D., Steger, C. "Beyond Dents and
    Scratches: Logical Constraints in Unsupervised Anomaly Detection and Localization."
    IJCV 130, 2022.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daad.annotations.bitmap import union
from daad.registry.catalogue import SourceEntry
from daad.loaders.base import NormalImage, Skipped, record_or_skip
from daad.loaders.catalogue_entry import catalogue_entry
from daad.record import Record

ORIGIN = "mvtec_loco"
ANOMALY_TYPES = ("logical_anomalies", "structural_anomalies")


def _categories(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "test").is_dir())


def iter_records(root: Path, entry: SourceEntry | None = None) -> Iterator[Record | Skipped]:
    """One record per defective test image; its mask is the union of its ground-truth files."""
    root = Path(root)
    entry = entry or catalogue_entry(ORIGIN)
    for category in _categories(root):
        for kind in ANOMALY_TYPES:
            label = f"{category.name}/{kind}"
            for image_path in sorted((category / "test" / kind).glob("*.png")):
                native_id = f"{label}/{image_path.stem}"
                mask_dir = category / "ground_truth" / kind / image_path.stem
                mask_paths = sorted(mask_dir.glob("*.png"))
                if not mask_paths:
                    yield Skipped(f"{ORIGIN}/{native_id}", image_path, "no_annotation", f"no masks in {mask_dir}")
                    continue
                try:
                    mask = union(mask_paths, threshold=0)
                except ValueError as exc:
                    yield Skipped(f"{ORIGIN}/{native_id}", mask_dir, "bad_annotation", str(exc))
                    continue
                note = f"{len(mask_paths)} defect masks merged" if len(mask_paths) > 1 else None
                yield record_or_skip(entry, native_id, label, image_path, root, mask, mask_path=mask_dir,
                                     split="test", note=note)


def iter_normals(root: Path) -> Iterator[NormalImage]:
    """``train/good``, ``validation/good`` and ``test/good`` of every category."""
    root = Path(root)
    for category in _categories(root):
        for split in ("train", "validation", "test"):
            for image_path in sorted((category / split / "good").glob("*.png")):
                yield NormalImage(f"{ORIGIN}/{category.name}/{split}/{image_path.stem}", image_path, split)
