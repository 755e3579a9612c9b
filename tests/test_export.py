"""A generated dataset exported to MVTec AD's tree, anomalib's Folder layout and an image
folder, read back: the MVTec export by daad's own evaluation reader, the others by their
documented layouts (anomalib is not installed here)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from daad.cli import app
from daad.evaluation.data import mvtec_layout_set
from daad.dataset.export import ExportError, export_generated
from daad.synthesis.base import Synthesis
from daad.synthesis.output import write_generated


@pytest.fixture
def generated(tmp_path):
    """Six rows (two classes) made from three target normals saved in a folder."""
    rng = np.random.default_rng(0)
    targets = tmp_path / "normals"
    targets.mkdir()
    normals = {}
    for i in range(3):
        image = rng.integers(90, 160, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(targets / f"n{i}.png")
        normals[f"normals/n{i}.png"] = image

    def rows():
        for k, (tid, image) in enumerate(normals.items()):
            for cls in ("crack", "stain"):
                mask = np.zeros(image.shape[:2], np.uint8)
                mask[10 + k: 20 + k, 5:30] = 1
                out = image.copy()
                out[mask > 0] = 20
                yield Synthesis(out, mask, cls, tid, (f"sd_saliency_900/In_{k}",), {})

    out = tmp_path / "gen"
    write_generated(out, rows(), generator="toy", params={}, seed=0, evaluation="none", progress=False)
    return out, targets


def test_mvtec_export_is_read_by_the_mvtec_layout_evaluation_reader(generated, tmp_path):
    gen, targets = generated
    result = CliRunner().invoke(app, ["export", str(gen), "--out", str(tmp_path / "mv"), "--format", "mvtec",
                                      "--targets", str(targets), "--category", "toy"])
    assert result.exit_code == 0, result.output
    ev = mvtec_layout_set(tmp_path / "mv" / "toy")
    assert len(ev.train_normals) == 3 and len(ev.test) == 6 == len(ev.test_anomalies)
    assert {s.id.split("/")[2] for s in ev.test} == {"crack", "stain"}
    assert all(s.mask.sum() == 250 for s in ev.test)  # 10 x 25 pixels, read back from the 0/255 mask PNG
    with open(tmp_path / "mv" / "provenance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 + 12 and {r["target_id"] for r in rows if r["kind"] == "image"} == {f"normals/n{i}.png" for i in range(3)}
    assert all(r["source_ids"].startswith("sd_saliency_900/") for r in rows if r["kind"] != "normal")
    assert "toy" in (tmp_path / "mv" / "README.md").read_text()


def test_anomalib_folder_and_imagefolder_layouts(generated, tmp_path):
    gen, targets = generated
    assert export_generated(gen, tmp_path / "folder", "anomalib-folder", targets=targets) == 6
    abnormal = sorted(p.name for p in (tmp_path / "folder" / "abnormal").iterdir())
    assert abnormal == sorted(p.name for p in (tmp_path / "folder" / "mask").iterdir()) and len(abnormal) == 6
    assert len(list((tmp_path / "folder" / "normal").iterdir())) == 3
    mask = np.asarray(Image.open(tmp_path / "folder" / "mask" / abnormal[0]))
    assert set(np.unique(mask)) == {0, 255}
    export_generated(gen, tmp_path / "imf", "imagefolder")
    assert sorted(p.name for p in (tmp_path / "imf").iterdir() if p.is_dir()) == ["crack", "masks", "stain"]
    assert len(list((tmp_path / "imf" / "crack").iterdir())) == 3


def test_export_refuses_an_existing_folder_and_a_bad_format(generated, tmp_path):
    gen, _ = generated
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="exists"):
        export_generated(gen, tmp_path / "taken", "mvtec")
    with pytest.raises(ExportError, match="unknown export format"):
        export_generated(gen, tmp_path / "x", "coco")
    with pytest.raises(ExportError, match="no generated shards"):
        export_generated(tmp_path, tmp_path / "y", "mvtec")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
