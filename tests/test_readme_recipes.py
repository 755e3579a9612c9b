"""The README's torch DataLoader recipe, run as written on a real build of mixed image sizes."""

from __future__ import annotations

import re

from conftest import REPO, SOURCE_ROOTS, copy_manifests
from daad.dataset.build import build
from daad.registry import Registry
from daad.registry.roots import Roots


def _recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    (recipe,) = [b for b in blocks if b.startswith("# torch DataLoader recipe")]
    return recipe


def test_the_dataloader_recipe_batches_a_real_build_of_mixed_sizes(tmp_path, monkeypatch):
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900", "crackforest")  # 200x200 grey BMP, 480x320 JPEG
    build(Registry(manifests, Roots(SOURCE_ROOTS)), tmp_path / "build" / "daad", progress=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_recipe(), "README.md recipe", "exec"), namespace)
    batch, ds = namespace["batch"], namespace["ds"]
    assert len(ds) == 1013 and {ds[i]["image"].size for i in (0, len(ds) - 1)} == {(480, 320), (200, 200)}
    assert tuple(batch["image"].shape) == (16, 3, 256, 256) and tuple(batch["mask"].shape) == (16, 1, 256, 256)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0} and batch["mask"].sum() > 0
    assert batch["anomaly_class"].shape == (16,) and 0 <= int(batch["anomaly_class"].min())
