"""Generating in worker processes gives the bytes and the report one process gives (real data)."""

from __future__ import annotations

import itertools

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA, SOURCE_ROOTS, copy_manifests
from daad.cli import app
from daad.loaders.kolektorsdd import iter_normals
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.baselines.cutpaste import CutPaste, CutPasteConfig
from daad.synthesis.baselines.draem import DRAEM, DRAEMConfig
from daad.synthesis.baselines.nsa import NSA, NSAConfig
from daad.synthesis.cai import CAI, CAIConfig
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.parallel import CHUNK, generate_encoded
from daad.synthesis.targets import load_targets

KSDD = SHARED_DATA / "kolektorsdd-yolo"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    return copy_manifests(tmp_path_factory.mktemp("m"), "sd_saliency_900", "crackforest", "kolektorsdd")


@pytest.fixture(scope="module")
def view(manifests):
    return Registry(manifests, Roots(SOURCE_ROOTS)).view(evaluation="kolektorsdd", classes=["crack", "scratch"])


@pytest.fixture(scope="module")
def targets():
    items = [(n.id, n.path) for n in itertools.islice(iter_normals(KSDD), 2 * CHUNK + 1)]
    return list(load_targets(items, 128))


GENERATORS = {
    "cai-mixed": lambda: CAI(CAIConfig(mode="mixed", per_target=3), ForegroundExtractor("classical")),
    "nsa-normal": lambda: NSA(NSAConfig(per_target=2), ForegroundExtractor("classical")),
    "cutpaste-scar": lambda: CutPaste(CutPasteConfig(scar=True, per_target=2)),
    "draem": lambda: DRAEM(DRAEMConfig(per_target=2)),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_two_workers_give_the_rows_of_one(name, targets, view):
    results = []
    for workers in (1, 2):
        generator = GENERATORS[name]()
        generator.prepare(view)
        rows = list(generate_encoded(generator, targets, seed=3, workers=workers))
        results.append((rows, generator.report))
    (serial, serial_report), (parallel, parallel_report) = results
    assert len(serial) == len(targets) * GENERATORS[name]().config.per_target - serial_report.gave_up
    assert [r.target_id for r in parallel] == [r.target_id for r in serial]
    assert parallel == serial  # PNG bytes, classes, sources and details, in order
    assert parallel_report == serial_report and serial_report.rows == len(serial)


def test_cli_output_does_not_depend_on_the_number_of_workers(manifests, targets, tmp_path):
    folder = tmp_path / "targets"
    folder.mkdir()
    for normal in itertools.islice(iter_normals(KSDD), 2 * CHUNK + 1):
        (folder / normal.path.name).write_bytes(normal.path.read_bytes())
    shards = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        result = CliRunner().invoke(app, [
            "synth", "cai", "--targets", str(folder), "--eval", "kolektorsdd", "--per-target", "2",
            "--workers", str(workers), "--size", "128", "--out", str(out), "-q", "--manifests", str(manifests),
            *(arg for origin, path in SOURCE_ROOTS.items() for arg in ("--root", f"{origin}={path}")),
        ])
        assert result.exit_code == 0, result.output
        shards.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert shards[0] == shards[1] and len(shards[0]) >= 3
