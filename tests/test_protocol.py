"""The paper's protocol in one command: runs are picklable specs executed through a pluggable executor;
the sweep fills one results table as runs finish and resumes after an interruption without redoing one."""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from conftest import SD_ROOT, copy_manifests
from daad.cli import app
from daad.evaluation.protocol import ResultsTable, RunSpec, execute, local_executor, sweep
from daad.evaluation.sets import load_evaluation_set
from daad.evaluation.train import TrainConfig
from daad.synthesis.output import read_generated
from helpers.fake_datasets import write_mvtec_ad

TINY = TrainConfig(size=32, steps=2, eval_every=2, batch_size=2, base_width=4, device="cpu", progress=False, selection="test-best")


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec_ad")
    write_mvtec_ad(root)
    return root


def _specs(mvtec, out, generators=("cutpaste", "nsa-normal"), categories=("bottle", "cable")):
    return [RunSpec(g, "mvtec_ad", str(mvtec), c, str(out), TINY, per_target=2) for c in categories for g in generators]


def test_a_run_spec_is_picklable_and_execute_is_module_level(mvtec, tmp_path):
    spec = _specs(mvtec, tmp_path)[0]
    assert pickle.loads(pickle.dumps(spec)) == spec and pickle.loads(pickle.dumps(execute)) is execute
    assert spec.key == "mvtec_ad/bottle/cutpaste"


def test_sweep_fills_one_table_and_resumes_after_an_interruption(mvtec, tmp_path):
    specs = _specs(mvtec, tmp_path)
    ran = []

    def interrupted(function, todo):
        ran.extend(s.key for s in todo[:1])
        yield function(todo[0])
        raise KeyboardInterrupt  # the machine goes away after the first run

    with pytest.raises(KeyboardInterrupt):
        sweep(specs, tmp_path, executor=interrupted)
    assert list(ResultsTable.open(tmp_path).rows) == ["mvtec_ad/bottle/cutpaste"]

    def counting(function, todo):
        ran.extend(s.key for s in todo)
        yield from local_executor(function, todo)

    table, failed = sweep(specs, tmp_path, executor=counting)
    assert not failed and ran == [s.key for s in specs]  # each run exactly once across the two sweeps
    assert sorted(table.rows) == sorted(s.key for s in specs)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0 <= float(r["pixel_ap"]) <= 1 and r["selection"] == "test-best" for r in rows)
    md = (tmp_path / "results.md").read_text()
    assert "| mvtec_ad | cutpaste | 2 |" in md and "optimistic" in md  # mean over the two categories; test-best labelled
    # every run trained on its own category's training normals, 2 rows per target
    for spec in specs:
        bottle = load_evaluation_set("mvtec_ad", mvtec, spec.category)
        targets = {row["target_id"] for row in read_generated(spec.folder / "generated")}
        assert targets == {s.id for s in bottle.train_normals}
        report = json.loads((spec.folder / "report" / "report.json").read_text())
        assert report["results"][0]["rows"] == 2 * len(bottle.train_normals)
    ran.clear()
    sweep(specs, tmp_path, executor=counting)
    assert ran == []  # nothing redone


def test_a_failed_run_is_reported_not_recorded(mvtec, tmp_path):
    good, bad = _specs(mvtec, tmp_path, generators=("cutpaste",), categories=("bottle",))[0], None
    bad = replace(good, category="nope")
    table, failed = sweep([good, bad], tmp_path)
    assert list(table.rows) == [good.key] and [f["key"] for f in failed] == [bad.key]
    assert "no category nope" in failed[0]["error"]


def test_daad_protocol_with_cai_from_the_leak_free_view(mvtec, tmp_path):
    """CAI-N draws real anomalies from the registry view (SD-saliency-900 here) for bottle's training normals."""
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900")
    args = ["protocol", "--eval", "mvtec_ad", "--root", f"mvtec_ad={mvtec}", "--root", f"sd_saliency_900={SD_ROOT}",
            "--manifests", str(manifests), "--category", "bottle", "--generator", "cai-normal", "--generator", "cutpaste",
            "--per-target", "2", "--size", "64", "--epochs", "0", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
            "--width", "4", "--device", "cpu", "--selection", "val", "--foreground", "full", "--out", str(tmp_path / "o"), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ran 2, already done 0, failed 0" in result.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv", newline="")))
    assert [r["generator"] for r in rows] == ["cai-normal", "cutpaste"] and all(r["selection"] == "val" for r in rows)
    cai = list(read_generated(tmp_path / "o" / "runs/mvtec_ad/bottle/cai-normal/generated"))
    assert len(cai) == 4 and all(s.startswith("sd_saliency_900/") for row in cai for s in row["source_ids"])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "ran 0, already done 2" in result.output
    result = CliRunner().invoke(app, [*args[:-3], "--category", "nope", "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2 and "mvtec_ad has no nope" in result.output


def test_the_t30_generators_mark_the_pixels_changed_by_more_than_30_grey_levels():
    import numpy as np

    from daad.evaluation.protocol import make_generator
    from daad.synthesis.base import Target
    from daad.synthesis.cai import Pattern, PatternBank
    from daad.synthesis.foreground import ForegroundExtractor
    from daad.synthesis.injection import grey

    rng = np.random.default_rng(0)
    crack = np.full((24, 24, 3), 200, np.uint8)
    crack[10:14, :] = 20  # a dark streak on a bright patch
    bank = PatternBank([Pattern("src", crack, np.ones((24, 24), np.uint8))])
    targets = [Target(f"t{i}", rng.integers(110, 140, (64, 64, 3), dtype=np.uint8), "unknown") for i in range(2)]
    default, t30 = (make_generator(name, 3, ForegroundExtractor("full")) for name in ("cai-mixed", "cai-mixed-t30"))
    assert (t30.config.threshold, t30.config.mode, t30.config.mask_rule) == (30, "mixed", "pattern")
    assert default.config.threshold == 7  # the paper's threshold stays the default
    def strong_share(generator) -> float:  # share of the masked pixels changed by more than 30
        rows = list(generator.generate_from_bank(targets, bank, seed=0))
        images = {t.id: grey(t.image).astype(int) for t in targets}
        changes = [np.abs(grey(r.image).astype(int) - images[r.target_id])[r.mask > 0] for r in rows]
        return float((np.concatenate(changes) > 30).mean())

    # the 3 x 3 closing that fills pinholes in the pattern rule's mask adds a few weaker pixels
    assert strong_share(t30) > 0.8 > strong_share(default) + 0.2
