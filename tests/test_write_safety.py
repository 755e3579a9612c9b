"""Nothing a maintainer does loses work: ingest refuses a wrong root and large removals,
named collections live side by side, curation comes back from the journal, network
failures are not verdicts, and a build that would write nothing fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from conftest import REPO, SD_ROOT, SOURCE_ROOTS, copy_manifests
from helpers.collections import real_collection
from daad.atomic import link_or_copy, temp_path
from daad.dataset.build import EmptyBuildError, build
from daad.registry.catalogue import Catalogue
from daad.cli import app
from daad.registry.collection import CollectionError
from daad.curate.journal import append_entries, curated_values, read_log
from daad.sources.http import DownloadResult
from daad.sources.url_images import failure_reason, fetch
from daad.sources.ingest import NoRecordsError, RemovalRefusedError, RootError, ingest
from daad.licences import LicenceCatalogue, LicencePolicy
from daad.loaders import get_loader
from daad.registry.manifest import read_manifest, write_manifest
from daad.record import ImageRef, Record
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.taxonomy import Source, Status

CF_ROOT = SOURCE_ROOTS["crackforest"]


def _ingest(*args: str):
    return CliRunner().invoke(app, ["ingest", *args])


@pytest.fixture
def cf_manifests(tmp_path) -> Path:
    return copy_manifests(tmp_path / "manifests", "crackforest", "sd_saliency_900")


@pytest.mark.parametrize("root", ["sd_saliency_900={missing}", "sd_saliency_900={empty}", "crackforest={sd}"])
def test_ingest_refuses_a_missing_or_empty_root(cf_manifests, tmp_path, root):
    (tmp_path / "empty").mkdir()
    root = root.format(missing=tmp_path / "nope", empty=tmp_path / "empty", sd=SD_ROOT)
    manifest = cf_manifests / "sd_saliency_900.jsonl"
    before = manifest.read_bytes()
    result = _ingest("sd_saliency_900", "--root", root, "--manifests", str(cf_manifests))
    assert isinstance(result.exception, RootError), result.output
    message = str(result.exception)
    assert root in message and "`daad ingest sd_saliency_900 --root sd_saliency_900=PATH`" in message
    assert manifest.read_bytes() == before


def test_ingest_takes_root_as_every_command_does(cf_manifests, tmp_path):
    """``--root ORIGIN=PATH`` only: a bare path is a usage error (exit 2) that changes nothing."""
    manifest = cf_manifests / "sd_saliency_900.jsonl"
    before = manifest.read_bytes()
    result = _ingest("sd_saliency_900", "--root", str(SD_ROOT), "--manifests", str(cf_manifests))
    assert result.exit_code == 2 and "ORIGIN=PATH" in result.output, result.output
    assert manifest.read_bytes() == before


def test_ingest_takes_the_origin_equals_path_syntax(cf_manifests):
    manifest = cf_manifests / "sd_saliency_900.jsonl"
    result = _ingest("sd_saliency_900", "--root", f"sd_saliency_900={SD_ROOT}", "--manifests", str(cf_manifests), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == 900 and len(list(read_manifest(manifest))) == 900


def test_ingest_refuses_a_root_with_no_records(cf_manifests, tmp_path):
    (tmp_path / "wrong" / "sub").mkdir(parents=True)  # a folder, but not SD-saliency-900's layout
    manifest = cf_manifests / "sd_saliency_900.jsonl"
    before = manifest.read_bytes()
    result = _ingest("sd_saliency_900", "--root", f"sd_saliency_900={tmp_path / 'wrong'}", "--manifests", str(cf_manifests))
    assert isinstance(result.exception, NoRecordsError) and "--root" in str(result.exception)
    assert manifest.read_bytes() == before


def _partial_crackforest(dest: Path, drop: set[str]) -> Path:
    """A copy of the real CrackForest tree without the images (and labels) named in ``drop``."""
    shutil.copytree(CF_ROOT, dest, ignore=lambda d, names: [n for n in names if Path(n).stem in drop])
    return dest


def test_ingest_refuses_large_removals_and_shows_what_would_go(cf_manifests, tmp_path):
    manifest = cf_manifests / "crackforest.jsonl"
    before = manifest.read_bytes()
    ids = [r.id for r in read_manifest(manifest)]
    drop = {rid.split("/")[1] for rid in ids[:10]}  # 10 of 118: more than 5 %
    root = _partial_crackforest(tmp_path / "cf", drop)
    result = _ingest("crackforest", "--root", f"crackforest={root}", "--manifests", str(cf_manifests))
    assert isinstance(result.exception, RemovalRefusedError), result.output
    assert "│     108 │     0 │      10 │" in result.output  # the table: records, added, removed
    assert all(f"  {rid}" in result.output for rid in ids[:10])
    assert "--allow-remove" in str(result.exception) and ids[0] in str(result.exception)
    assert manifest.read_bytes() == before

    # A few (at most 5 %) may go; more with --allow-remove.
    small = ingest(get_loader("crackforest").iter_records(_partial_crackforest(tmp_path / "cf5", set(list(drop)[:5]))),
                   manifest)
    assert small.removed == 5 and small.written
    allowed = _ingest("crackforest", "--root", f"crackforest={root}", "--manifests", str(cf_manifests), "--allow-remove", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["removed"] == 5 and len(list(read_manifest(manifest))) == 108


def test_curation_survives_a_remove_and_re_add_cycle(cf_manifests, tmp_path):
    """What ``daad curate sync`` journals (here written directly) comes back when the records do."""
    manifest = cf_manifests / "crackforest.jsonl"
    records = {r.id: r for r in read_manifest(manifest)}
    rejected, relabelled = "crackforest/001", "crackforest/002"
    curated = {
        rejected: Record.from_json(records[rejected].to_json() | {"status": "rejected", "reason": "blurry",
                                                                  "curated": ["status"]}),
        relabelled: Record.from_json(records[relabelled].to_json() | {"anomaly_class": "scratch",
                                                                      "curated": ["anomaly_class"]}),
    }
    append_entries(cf_manifests, [
        {"id": rejected, "fields": ["status"], "after": curated_values(curated[rejected], ["status"])},
        {"id": relabelled, "fields": ["anomaly_class"], "after": curated_values(curated[relabelled], ["anomaly_class"])},
    ])
    write_manifest(manifest, [curated.get(rid, r) for rid, r in records.items()])
    synced = manifest.read_bytes()

    assert _ingest("crackforest", "--root", f"crackforest={tmp_path / 'typo'}", "--manifests", str(cf_manifests)).exit_code != 0
    assert manifest.read_bytes() == synced
    gone = _ingest("crackforest", "--root", f"crackforest={_partial_crackforest(tmp_path / 'cf', {'001', '002'})}",
                   "--manifests", str(cf_manifests), "--allow-remove")
    assert gone.exit_code == 0, gone.output
    assert {rejected, relabelled}.isdisjoint(r.id for r in read_manifest(manifest))
    back = _ingest("crackforest", "--root", f"crackforest={CF_ROOT}", "--manifests", str(cf_manifests), "--json")
    assert back.exit_code == 0 and json.loads(back.output)["added"] == 2
    assert manifest.read_bytes() == synced  # byte for byte the synced state
    after = {r.id: r for r in read_manifest(manifest)}
    assert (after[rejected].status, after[rejected].reason) == (Status.REJECTED, "blurry")
    assert after[relabelled].anomaly_class == "scratch" and after[relabelled].native_label == "crack"
    # Appending the same decisions again adds nothing to the journal.
    assert append_entries(cf_manifests, [{"id": rejected, "after": curated_values(curated[rejected], ["status"])}]) == 0
    assert len(read_log(cf_manifests)) == 2


def test_named_collections_live_side_by_side(cf_manifests, tmp_path):
    first = real_collection(tmp_path / "first", ["In_1", "Pa_1", "Sc_1"])
    second = real_collection(tmp_path / "second", ["In_2", "In_3", "Sc_2", "Sc_3"])
    m = ["--manifests", str(cf_manifests)]
    a = _ingest("steel_a", "--loader", "folder", "--root", f"steel_a={first}", *m, "--json")
    assert a.exit_code == 0, a.output
    a_bytes = (cf_manifests / "steel_a.jsonl").read_bytes()
    b = _ingest("steel_b", "--loader", "folder", "--root", f"steel_b={second}", *m, "--licence", "CC0-1.0", "--json")
    assert b.exit_code == 0, b.output
    assert json.loads(b.output)["records"] == 4 and json.loads(b.output)["removed"] == 0
    assert (cf_manifests / "steel_a.jsonl").read_bytes() == a_bytes  # the second touched nothing of the first

    catalogue = Catalogue.load(cf_manifests)
    assert (catalogue["steel_a"].licence, catalogue["steel_b"].licence) == ("CC-BY-4.0", "CC0-1.0")  # flag wins
    assert catalogue["steel_a"].loader == "folder" and catalogue["steel_a"].citation == "Our lab, 2026"
    assert catalogue["steel_b"].classes["kratzer"] == "scratch"
    records = {r.id: r for r in Registry(cf_manifests).records(["steel_a", "steel_b"])}
    assert sorted(records) == ["steel_a/photos/In_1", "steel_a/photos/Pa_1", "steel_a/photos/Sc_1",
                               "steel_b/photos/In_2", "steel_b/photos/In_3", "steel_b/photos/Sc_2", "steel_b/photos/Sc_3"]
    assert records["steel_a/photos/Sc_1"].anomaly_class == "scratch" and records["steel_a/photos/Pa_1"].native_label == "fleck"
    assert {r.licence for r in records.values() if r.origin == "steel_b"} == {"CC0-1.0"}

    sources = CliRunner().invoke(app, ["sources", *m, "--json"])
    listed = {e["id"]: e for e in json.loads(sources.output)}
    assert listed["steel_a"]["loader"] == "folder" and listed["steel_b"]["name"] == "Our steel strip"
    again = _ingest("steel_a", "--root", f"steel_a={first}", *m, "--json")  # the collection is known now: no --loader
    assert again.exit_code == 0 and json.loads(again.output)["unchanged"] == 3

    out = tmp_path / "built"
    registry = Registry(cf_manifests, Roots({"steel_a": first, "steel_b": second}))
    summary = build(registry, out, origins=["steel_a", "steel_b"], progress=False)
    assert summary.accepted == 7 and summary.origins == Counter({"steel_a": 3, "steel_b": 4})
    rows = datasets.load_dataset(str(out), split="train")
    assert sorted(rows["id"]) == sorted(records)

    # The old way, one `folder` origin for everything: the second folder would remove the first's records.
    plain = [real_collection(tmp_path / f"plain{i}", stems, own_names=False) for i, stems in enumerate([["In_4"], ["In_5"]])]
    assert _ingest("folder", "--root", f"folder={plain[0]}", *m).exit_code == 0
    folder_bytes = (cf_manifests / "folder.jsonl").read_bytes()
    replaced = _ingest("folder", "--root", f"folder={plain[1]}", *m)
    assert isinstance(replaced.exception, RemovalRefusedError) and (cf_manifests / "folder.jsonl").read_bytes() == folder_bytes

    taken = _ingest("crackforest", "--loader", "folder", "--root", f"crackforest={first}", *m)
    assert isinstance(taken.exception, CollectionError) and "my_crackforest" in str(taken.exception)
    bad = _ingest("Steel-C", "--loader", "folder", "--root", f"Steel-C={first}", *m)
    assert isinstance(bad.exception, CollectionError)


def test_network_failures_are_not_verdicts(tmp_path):
    def result(reason, status=None):
        return DownloadResult("http://x", tmp_path, False, reason, http_status=status)

    assert failure_reason(result("dead_link", 404)) == failure_reason(result("dead_link", 410)) == "dead_link"
    assert failure_reason(result("dead_link")) == "network_error"  # refused / DNS: no answer
    assert failure_reason(result("timeout")) == failure_reason(result("http_error", 503)) == "network_error"
    assert failure_reason(result("http_error", 403)) == "http_error"

    # Offline: a refused connection and an unresolvable host, through the real fetch and CLI.
    manifests = tmp_path / "manifests"
    records = [
        Record(id=f"web_test/{i}", anomaly_class="crack", source=Source.ONLINE_SEARCH, origin="web_test",
               native_label="crack", licence="unknown", image=ImageRef(url=url), status=Status.NEEDS_IMAGE)
        for i, url in enumerate(["http://127.0.0.1:9/a.png", "http://no-such-host.invalid/b.png"])
    ]
    write_manifest(manifests / "web_test.jsonl", records)
    before = (manifests / "web_test.jsonl").read_bytes()
    report = fetch(manifests, timeout=2, retries=0, progress=False)
    assert report.failed == {"network_error": 2} and report.all_failed and report.manifests_written == []
    assert (manifests / "web_test.jsonl").read_bytes() == before  # nothing written as curated
    cli = CliRunner().invoke(app, ["fetch", "--manifests", str(manifests), "--timeout", "2", "--retries", "0"])
    assert cli.exit_code == 1 and "network_error" in cli.output and "again" in cli.output
    assert "dead_link" not in cli.output and (manifests / "web_test.jsonl").read_bytes() == before


def test_a_build_that_would_write_nothing_fails_and_keeps_the_previous_output(sd_manifests, tmp_path):
    registry = Registry(sd_manifests, Roots({"sd_saliency_900": SD_ROOT}))
    out = tmp_path / "daad"
    build(registry, out, progress=False, workers=1)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    commercial = LicencePolicy.parse("commercial", LicenceCatalogue.load(sd_manifests))
    with pytest.raises(EmptyBuildError, match="commercial") as exc:
        build(registry, out, licence_policy=commercial, progress=False, workers=1)
    assert "licence_policy:LicenseRef-SD-saliency-900-research 895" in str(exc.value)  # 5 more are duplicates
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daad", "manifests"]  # no partial folder beside it

    result = subprocess.run(
        [sys.executable, "-m", "daad", "build", "--out", str(out), "--manifests", str(sd_manifests), "--root",
         f"sd_saliency_900={SD_ROOT}", "--licence-policy", "commercial", "--no-download", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "nothing to build" in result.stderr, result.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_manifest_writer_leaves_no_temp_where_readers_look(tmp_path):
    path = tmp_path / "web_test.jsonl"
    stale = temp_path(path, pid=2**22 + 12345)  # a killed writer's leftover (no such process)
    stale.write_text("half a line")
    write_manifest(path, [])
    assert not stale.exists() and [p.name for p in tmp_path.iterdir()] == ["web_test.jsonl"]


def test_a_collection_of_ones_own_in_the_mvtec_layout(cf_manifests, tmp_path):
    """``--loader mvtec_ad``: the shared MVTec reader with MVTec AD's naming, the collection's own class map."""
    from helpers.fake_datasets import write_mvtec_ad

    expected = write_mvtec_ad(tmp_path / "parts")
    class_map = [a for label in expected.records for a in ("--class-map", f"{label}=crack")]
    result = _ingest("my_parts", "--loader", "mvtec_ad", "--root", f"my_parts={tmp_path / 'parts'}",
                     "--manifests", str(cf_manifests), "--json", *class_map)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == expected.total
    records = list(read_manifest(cf_manifests / "my_parts.jsonl"))
    assert Counter(r.native_label for r in records) == Counter(expected.records)
    assert {r.anomaly_class for r in records} == {"crack"} and {r.origin for r in records} == {"my_parts"}


def test_link_or_copy_copies_atomically_where_it_cannot_link(tmp_path, monkeypatch):
    """Across file systems (no hard link) the copy goes through a temp file: a copy cut short leaves
    no ``dest`` that a later call would take for finished; an existing ``dest`` is kept."""
    import os

    source = tmp_path / "image.bmp"
    source.write_bytes(bytes(range(256)) * 8192)
    dest = tmp_path / "staged" / "image.bmp"

    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    real_open = open

    class CutShort:
        def __init__(self, f):
            self.f, self.reads = f, 0

        def read(self, n):
            self.reads += 1
            if self.reads == 2:
                raise OSError(5, "Input/output error")
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: CutShort(real_open(p, mode, *a, **k))
                        if Path(p) == source else real_open(p, mode, *a, **k))
    with pytest.raises(OSError):
        link_or_copy(source, dest)
    assert not dest.exists() and not list(dest.parent.iterdir())  # no half file, no temp left
    monkeypatch.setattr("builtins.open", real_open)
    link_or_copy(source, dest)
    assert dest.read_bytes() == source.read_bytes() and dest.stat().st_ino != source.stat().st_ino
    dest.write_bytes(b"kept")
    link_or_copy(source, dest)
    assert dest.read_bytes() == b"kept"
