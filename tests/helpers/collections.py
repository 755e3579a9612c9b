"""A user's named folder collection made of real images, for the collection tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SD_ROOT


def real_collection(root: Path, stems: list[str], *, own_names: bool = True) -> Path:
    """A user's folder collection made of real SD-saliency-900 images and masks, with its own
    class names mapped in ``collection.toml`` (DAAD's class names unless ``own_names``)."""
    names = {"In": "einschluss", "Pa": "fleck", "Sc": "kratzer"} if own_names else {
        "In": "impurity", "Pa": "stain", "Sc": "scratch"}
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,class"]
    for stem in stems:
        shutil.copy(SD_ROOT / "Source Images" / f"{stem}.bmp", root / "photos" / f"{stem}.bmp")
        shutil.copy(SD_ROOT / "Ground truth" / f"{stem}.png", root / "masks" / f"{stem}.png")
        rows.append(f"photos/{stem}.bmp,{names[stem[:2]]}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "collection.toml").write_text(
        'name = "Our steel strip"\nlicence = "CC-BY-4.0"\nsource = "reality_photo"\ncitation = "Our lab, 2026"\n'
        '[classes]\neinschluss = "impurity"\nfleck = "stain"\nkratzer = "scratch"\n'
    )
    return root
