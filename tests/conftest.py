"""Shared fixtures: the real data beside the checkout, and scratch copies of the manifests."""

from __future__ import annotations

import os
from collections import Counter
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DAAD_SHARED_DATA", REPO.parent / "shared" / "data"))
SD_ROOT = SHARED_DATA / "sd-saliency-900"
SOURCE_ROOTS = {
    "sd_saliency_900": SD_ROOT,
    "crackforest": SHARED_DATA / "crackforest",
    "kolektorsdd": SHARED_DATA / "kolektorsdd-yolo",
}
"""The real sources beside the checkout, by origin."""
CATALOGUE_FILES = ("sources.toml", "exclusions.toml", "licences.toml", "downloads.toml")

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="daad-test-hf-"))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


def pytest_sessionstart(session):
    """The tests read the real public data: without it, one message says where it is looked for."""
    missing = [str(p) for p in SOURCE_ROOTS.values() if not p.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"daad's tests read the real public data, not found at {', '.join(missing)}: put the shared "
            f"data folder beside the checkout (../shared/data) or set DAAD_SHARED_DATA to it"
        )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's daad cache or data dir."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("DAAD_CACHE_DIR", str(base / "daad-cache"))
    monkeypatch.setenv("DAAD_DATA_DIR", str(base / "daad-data"))
    # datasets caches a local folder under its *name*: one cache per test, so two outputs
    # both called e.g. "out" in different tests never share a cache entry.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))


def split_items(items) -> tuple[list, Counter]:
    """A loader's output as (records, skipped counts by reason)."""
    from daad.loaders.base import Skipped

    records, skipped = [], Counter()
    for item in items:
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
        else:
            records.append(item)
    return records, skipped


def committed_without_marks(origin: str) -> bytes:
    """The committed manifest of ``origin`` as its loader writes it: without the ``duplicate_of``
    marks ``daad dedup`` added (SD-saliency-900 publishes five pictures twice, KolektorSDD four)."""
    from dataclasses import replace

    from daad.registry.manifest import dumps, read_manifest

    records = read_manifest(REPO / "manifests" / f"{origin}.jsonl")
    return "".join(dumps(replace(r, duplicate_of=None)) + "\n" for r in records).encode()


def copy_manifests(dest: Path, *origins: str) -> Path:
    """A scratch manifests folder with the catalogue files and the given origins' manifests."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CATALOGUE_FILES:
        if (REPO / "manifests" / name).exists():
            shutil.copy(REPO / "manifests" / name, dest / name)
    if (REPO / "manifests" / "eval_hashes").is_dir():
        shutil.copytree(REPO / "manifests" / "eval_hashes", dest / "eval_hashes", dirs_exist_ok=True)
    for origin in origins:
        shutil.copy(REPO / "manifests" / f"{origin}.jsonl", dest / f"{origin}.jsonl")
    return dest


@pytest.fixture
def sd_manifests(tmp_path) -> Path:
    """Scratch manifests holding the real SD-saliency-900 manifest."""
    return copy_manifests(tmp_path / "manifests", "sd_saliency_900")


def writable_sd_subset(tmp_path: Path, manifests: Path, n: int):
    """A writable copy of the first ``n`` real SD-saliency-900 images, the manifest cut to
    their records, and a registry over them: ``(registry, root, records)``."""
    from daad.registry.manifest import read_manifest, write_manifest
    from daad.registry import Registry
    from daad.registry.roots import Roots

    root = tmp_path / "sd"
    (root / "Source Images").mkdir(parents=True)
    records = list(read_manifest(manifests / "sd_saliency_900.jsonl"))[:n]
    for r in records:
        shutil.copy(SD_ROOT / r.image.path, root / r.image.path)
    write_manifest(manifests / "sd_saliency_900.jsonl", records)
    return Registry(manifests, Roots({"sd_saliency_900": root})), root, records


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared CI box: one intra-op thread is far faster than spinning several."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

