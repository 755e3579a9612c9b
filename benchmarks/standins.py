"""A full-scale registry for build benchmarks on a machine without every source's files.

Origins whose files are here (``SOURCE_ROOTS``) keep their real manifests and images. The other
committed manifests (MTD, DeepCrack, BSData, NEU-Seg, CRACK500, AsphaltCrack300, Cracks and Potholes)
keep every record (ids, classes, masks,
duplicate marks, sizes) with a stand-in image of the record's size and format written at its
path (the manifest's sha256 rewritten to the stand-in's). Sources whose manifests are written at
download time (MVTec AD, VisA, MVTec 3D-AD, MVTec LOCO, AutoVI) get records at their publishers' mapped counts and
image sizes, made by daad's own record builder from ``POOL`` distinct stand-in images each (the
rest repeat them under other ids, so the page cache serves those reads). 3D-ADAM is left out: neither
its count nor its image size is known here.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from daad.registry.catalogue import Catalogue
from daad.images import sha256_file
from daad.loaders.base import make_record
from daad.registry.manifest import manifest_paths, read_manifest, write_manifest

DOWNLOADED = {
    # origin: (mapped records, width, height, suffix, native label): publishers' sizes; MVTec AD's
    # and VisA's counts as in the README; MVTec 3D-AD's mapped share estimated (948 less combined, bent, open),
    # MVTec LOCO's and AutoVI's as the README estimates them.
    "mvtec_ad": (901, 1024, 1024, ".png", "bottle/broken_large"),
    "visa": (775, 1500, 1000, ".jpg", "pcb1/scratch"),
    "mvtec_3d": (750, 800, 800, ".png", "crack"),
    "mvtec_loco": (240, 1700, 1100, ".png", "pushpins/contamination"),
    "autovi": (5, 1920, 1080, ".png", "engine_wiring/cardboard"),
}
POOL = 40
CATALOGUE_FILES = ("sources.toml", "exclusions.toml", "licences.toml", "downloads.toml")


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random texture with grain: compresses about as real photographs do."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)


def write_picture(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix.lower() in (".jpg", ".jpeg") else []
    cv2.imwrite(str(path), picture(width, height, seed), params)


def full_scale(repo: Path, roots_here: dict[str, Path], dest: Path) -> tuple[Path, dict[str, Path]]:
    """Write the scratch manifests and stand-in roots under ``dest``; returns (manifests, roots)."""
    manifests = dest / "manifests"
    manifests.mkdir(parents=True)
    for name in CATALOGUE_FILES:
        shutil.copy(repo / "manifests" / name, manifests / name)
    roots: dict[str, Path] = {}
    for path in manifest_paths(repo / "manifests"):
        origin = path.stem
        if origin in roots_here and roots_here[origin].is_dir():
            shutil.copy(path, manifests / path.name)
            roots[origin] = roots_here[origin]
            continue
        records = list(read_manifest(path))
        if not any(r.image.path for r in records):  # URL records (the online list): nothing to build
            continue
        root = roots[origin] = dest / origin
        written: dict[str, str] = {}
        for i, r in enumerate(records):
            if r.image.path not in written:
                write_picture(root / r.image.path, r.width, r.height, i)
                written[r.image.path] = sha256_file(root / r.image.path)
        write_manifest(manifests / path.name,
                       [replace(r, image=replace(r.image, sha256=written[r.image.path])) for r in records])
    catalogue = Catalogue.load(manifests)
    for origin, (count, width, height, suffix, label) in DOWNLOADED.items():
        root = roots[origin] = dest / origin
        pool = []
        for k in range(min(POOL, count)):
            image = root / f"{k:03d}{suffix}"
            write_picture(image, width, height, 10_000 + k)
            mask = np.zeros((height, width), np.uint8)
            y, x = (k * 37) % (height // 2), (k * 53) % (width // 2)
            mask[y : y + height // 10, x : x + width // 8] = 1
            pool.append(make_record(catalogue[origin], f"{label}/{k:03d}", label, image, root, mask, split="test"))
        write_manifest(manifests / f"{origin}.jsonl",
                       [replace(pool[i % len(pool)], id=f"{origin}/{label}/standin{i:05d}") for i in range(count)])
    return manifests, roots
