"""Sources pinned by their archive's sha256 (VisA, BTAD, KolektorSDD, MVTec AD): the manifest is
written on the user's machine at download time.

Each fake archive has its source's published layout (top folders, file types, CSV columns),
is made here, and is served from 127.0.0.1 at the path of the catalogue's URL; a scratch
catalogue pins the fake's sha256. ``daad download`` + ``daad build`` give the expected rows;
the same archive gives the same manifest bytes; a wrong sha256 or an unreadable archive is
refused with nothing left where a loader or the registry would look.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from conftest import REPO, copy_manifests
from daad.registry.catalogue import Catalogue, CatalogueError
from daad.loaders import get_loader
from daad.registry.manifest import read_manifest
from daad.sources.archive_sources import DOWNLOADED, FAILED, SKIPPED, PrepareOptions, prepare
from daad.registry import Registry
from daad.registry.roots import Roots
from helpers import fake_datasets as fake
from helpers.archive_server import ArchiveServer

NC = "CC-BY-NC-SA-4.0"
ORIGINS = ("btad", "kolektorsdd_original", "mvtec_ad", "visa")
MORE = ("mvtec_3d", "mvtec_ad2", "mvtec_loco")
"""Pinned too, all of them non-commercial; MVTec 3D-AD by md5, the only checksum published for it."""
MD5_PINNED = ("mvtec_3d", "ksdd2")


def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1663804800
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return buffer.getvalue()


def _files(root: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, bytes]:
    """Origin -> archive bytes, each in its publisher's layout."""
    base = tmp_path_factory.mktemp("published")
    fake.write_visa(base / "visa")
    fake.write_btad(base / "btad")
    fake.write_kolektorsdd_original(base / "kolektorsdd")
    fake.write_mvtec_ad(base / "mvtec")
    for origin in (*MORE, "ksdd2", "adam_3d"):
        getattr(fake, f"write_{origin}")(base / origin)
    return {
        # VisA_20220922.tar: the categories and split_csv/ at the top, no compression.
        "visa": _tar(_files(base / "visa") | {"LICENSE-DATASET": b"CC BY 4.0\n"}, "w"),
        # btad.zip: everything under BTech_Dataset_transformed/.
        "btad": _zip(_files(base / "btad", "BTech_Dataset_transformed/")),
        # KolektorSDD.zip: kos01 ... at the top.
        "kolektorsdd_original": _zip(_files(base / "kolektorsdd")),
        # mvtec_anomaly_detection.tar.xz: the categories, license.txt and readme.txt at the top.
        "mvtec_ad": _tar(_files(base / "mvtec") | {"license.txt": b"CC BY-NC-SA 4.0\n", "readme.txt": b"x\n"}, "w:xz"),
        # MVTec LOCO, MVTec 3D-AD and MVTec AD 2: the categories at the top as well, as anomalib unpacks and reads them.
    } | {origin: _tar(_files(base / origin) | {"license.txt": b"CC BY-NC-SA 4.0\n"}, "w:xz") for origin in MORE} | {
        # KolektorSDD2.zip: train/ and test/ at the top.
        "ksdd2": _zip(_files(base / "ksdd2")),
        # adam3d_cropped.zip (3D-ADAM): everything under adam3d_cropped/, which anomalib moves up when it unpacks it.
        "adam_3d": _zip(_files(base / "adam_3d", "adam3d_cropped/")),
    }


@pytest.fixture(scope="module")
def autovi(tmp_path_factory) -> dict[str, bytes]:
    """AutoVI's six Zenodo zips, category -> bytes, each holding ``<category>/`` at its top."""
    base = tmp_path_factory.mktemp("autovi")
    fake.write_autovi(base)
    return {c: _zip(_files(base / c, f"{c}/")) for c in fake.AUTOVI_IMAGES}


def _autovi_path(catalogue: Catalogue, category: str) -> str:
    return next(urlsplit(a.url).path for a in catalogue["autovi"].download.archives() if f"/{category}.zip" in a.url)


@pytest.fixture(scope="module")
def server(published, autovi):
    srv = ArchiveServer()
    catalogue = Catalogue.load(REPO / "manifests")
    for origin, body in published.items():
        srv.files[urlsplit(catalogue[origin].download.url).path] = body
    for category, body in autovi.items():
        srv.files[_autovi_path(catalogue, category)] = body
    yield srv
    srv.close()


def _pin(manifests: Path, sha256: dict[str, str | list[str]]) -> None:
    """Rewrite the scratch downloads.toml with ``sha256`` for the given origins (``md5`` where the
    catalogue pins that instead); a list pins an origin's archive and then its parts, in order."""
    tables = tomllib.loads((manifests / "downloads.toml").read_text())
    for origin, digest in sha256.items():
        digests = digest if isinstance(digest, list) else [digest]
        for table, value in zip([tables[origin], *tables[origin].get("parts", [])], digests, strict=True):
            table["md5" if "md5" in table else "sha256"] = value

    def lines(table: dict) -> str:
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items() if k != "parts")

    (manifests / "downloads.toml").write_text("".join(
        f"[{origin}]\n" + lines(table) + "\n" + "".join(f"[[{origin}.parts]]\n" + lines(p) + "\n" for p in table.get("parts", []))
        for origin, table in tables.items()
    ))


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.fixture
def catalogue(tmp_path, published, autovi) -> Path:
    """Scratch manifests (catalogue files only) pinning each fake archive's sha256."""
    manifests = copy_manifests(tmp_path / "manifests")
    _pin(manifests, {o: (hashlib.md5 if o in MD5_PINNED else hashlib.sha256)(body).hexdigest()
                     for o, body in published.items()} | {"autovi": [_sha256(b) for b in autovi.values()]})
    return manifests


def _options(data: Path, server: ArchiveServer, accepted=(NC,)) -> PrepareOptions:
    return PrepareOptions(data=data, accepted=frozenset(accepted), base_url=server.url, timeout=10, retries=0,
                          progress=False)


def _prepare_one(catalogue: Path, server: ArchiveServer, data: Path, origin: str):
    """``prepare`` of one origin into ``data``: its outcome and the registry."""
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, [origin], _options(data, server)).outcomes
    return outcome, registry


def _run(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daad", *args], cwd=cwd, env=os.environ | {"PYTHONPATH": str(REPO)} | env,
        capture_output=True, text=True, timeout=600,
    )


def test_download_writes_manifests_and_build_reads_them(server, catalogue, tmp_path):
    data = tmp_path / "data"
    env = {"DAAD_DATA_DIR": str(data), "DAAD_DOWNLOAD_BASE_URL": server.url, "DAAD_ACCEPT_LICENCES": "",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    common = ("--manifests", str(catalogue))

    # VisA (CC BY 4.0) and BTAD (CC BY-SA 4.0) need no acceptance; MVTec AD and KolektorSDD wait for it.
    first = _run("download", *common, "--json", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    outcomes = {o["origin"]: o for o in json.loads(first.stdout)}
    assert {o: outcomes[o]["status"] for o in ORIGINS} == {
        "btad": DOWNLOADED, "kolektorsdd_original": SKIPPED, "mvtec_ad": SKIPPED, "visa": DOWNLOADED}
    assert f"--accept-licence {NC}" in outcomes["mvtec_ad"]["detail"]
    assert outcomes["btad"]["detail"] == ("archive sha256 verified; manifest of 6 records written (6 of them unmapped); "
                                          "skipped: 1 no_annotation")
    # GitHub sources without a committed manifest (none in this scratch folder) are not fetched at all.
    assert outcomes["sd_saliency_900"]["status"] == SKIPPED and "no manifest" in outcomes["sd_saliency_900"]["detail"]
    assert sorted(p.name for p in (data / "manifests").iterdir()) == ["btad.jsonl", "visa.jsonl"]
    assert not list(catalogue.glob("*.jsonl"))  # the checkout's manifests are untouched

    # One command builds everything, with the non-commercial licence accepted by name.
    result = _run("build", *common, "--out", "out", "-q", "--accept-licence", NC, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    info = json.loads((tmp_path / "out" / "build.json").read_text())
    # VisA: 6 of 9 records map (two images split per defect, see test_loaders_fixtures); BTAD's
    # 'ko' is unmapped; KolektorSDD: 2 cracks; MVTec AD: broken_large x2, contamination, poke_insulation.
    # MVTec 3D-AD: 2 cracks and a damaged thread; MVTec AD 2 names no defect type (all unmapped). LOCO: one
    # record per defect mask, 5 of 12 structural (2 contamination of breakfast_box, pushpins' broken, color and
    # contamination); AutoVI (six zips): cardboard of its 12 records; KolektorSDD2: one label, 'defect' (3, unmapped).
    # 3D-ADAM: two holes, a crack, a cut, a scratch; its bulge and the folder the catalogue does not list unmapped.
    assert info["origins"] == {"adam_3d": 5, "autovi": 1, "kolektorsdd_original": 2, "mvtec_3d": 3, "mvtec_ad": 4,
                               "mvtec_loco": 5, "visa": 6}
    assert info["skipped"] == {"unmapped_class": 3 + 6 + 2 + 2 + 4 + 7 + 11 + 3 + 2}
    assert set(info["manifests"]) == {f"{o}.jsonl" for o in (*ORIGINS, *MORE, "autovi", "ksdd2", "adam_3d")}
    # The card's table of sources: rows, near copies left out, licence, commercial use, how obtained.
    card = (tmp_path / "out" / "README.md").read_text()
    assert ("| MVTec 3D Anomaly Detection (MVTec 3D-AD) (`mvtec_3d`) | 3 | 0 | `CC-BY-NC-SA-4.0` | no "
            "| by itself: md5-pinned archive (no sha256 published), manifest written at download |") in card
    assert "| Visual Anomaly (VisA) (`visa`) | 6 | 0 | `CC-BY-4.0` | yes | by itself: sha256-pinned archive" in card
    assert "(`mvtec_loco`) | 5 | 0 | `CC-BY-NC-SA-4.0` | no | by itself: sha256-pinned archive" in card
    assert "(AutoVI) (`autovi`) | 1 | 0 | `CC-BY-NC-SA-4.0` | no | by itself: sha256-pinned archive" in card
    assert "(`adam_3d`) | 5 | 0 | `CC-BY-NC-SA-4.0` | no | by itself: sha256-pinned archive" in card
    visa = {r.id: r for r in read_manifest(data / "manifests" / "visa.jsonl")}
    assert visa["visa/pcb1/000"].anomaly_class == "stain" and visa["visa/pcb1/000"].licence == "CC-BY-4.0"
    btad = {r.id: r for r in read_manifest(data / "manifests" / "btad.jsonl")}
    assert len(btad) == 6 and btad["btad/03/ko/0000"].image.path == "03/test/ko/0000.bmp"
    state = json.loads((data / ".daad" / "mvtec_ad.json").read_text())
    assert (state["records"], state["unmapped"]) == (6, 2) and state["manifest_sha256"] == hashlib.sha256(
        (data / "manifests" / "mvtec_ad.jsonl").read_bytes()).hexdigest()


def test_same_archive_gives_the_same_manifest_bytes(server, catalogue, tmp_path):
    manifests = {}
    for run in ("first", "second"):
        data = tmp_path / run
        report = prepare(Registry(catalogue, Roots(data=data)), ORIGINS, _options(data, server))
        assert [o.status for o in report.outcomes] == [DOWNLOADED] * 4, report.outcomes
        manifests[run] = {p.name: p.read_bytes() for p in sorted((data / "manifests").iterdir())}
    assert manifests["first"] == manifests["second"]
    assert len(manifests["first"]) == 4 and all(manifests["first"].values())

    # A manifest whose folder is gone (a crash between the two, or a user's cleanup): fetched again.
    data = tmp_path / "first"
    shutil.rmtree(data / "visa")
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, ["visa"], _options(data, server)).outcomes
    assert outcome.status == DOWNLOADED, outcome
    assert (data / "visa" / "split_csv" / "1cls.csv").is_file()
    assert (data / "manifests" / "visa.jsonl").read_bytes() == manifests["first"]["visa.jsonl"]


def _assert_nothing_left(data: Path, origin: str, registry: Registry) -> None:
    assert not (data / origin).exists()
    assert not (data / "manifests" / f"{origin}.jsonl").exists()
    assert not [p for p in (data / ".daad").iterdir() if p.name != "archives"]
    assert not [p for p in (data / ".daad" / "archives").iterdir() if not p.name.endswith(".part")]
    assert origin not in {p.stem for p in registry.manifests()}


def test_wrong_sha256_is_refused_and_leaves_nothing(server, catalogue, tmp_path, published):
    _pin(catalogue, {"visa": hashlib.sha256(published["visa"] + b"x").hexdigest()})
    data = tmp_path / "data"
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, ["visa"], _options(data, server)).outcomes
    assert outcome.status == FAILED and "sha256_mismatch" in outcome.detail
    _assert_nothing_left(data, "visa", registry)


def test_archive_the_loader_cannot_read_leaves_nothing(server, catalogue, tmp_path, published):
    """A verified archive without VisA's split file: no manifest, no folder, a named error."""
    members = tarfile.open(fileobj=io.BytesIO(published["visa"]))
    broken = {m.name: members.extractfile(m).read() for m in members if not m.name.startswith("split_csv/")}
    body = _tar(broken, "w")
    server.files["/broken/VisA_20220922.tar"] = body
    text = (catalogue / "downloads.toml").read_text().replace(
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/", "https://example.org/broken/")
    (catalogue / "downloads.toml").write_text(text)
    _pin(catalogue, {"visa": hashlib.sha256(body).hexdigest()})
    data = tmp_path / "data"
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, ["visa"], _options(data, server)).outcomes
    assert outcome.status == FAILED and "cannot write its manifest" in outcome.detail and "1cls.csv" in outcome.detail
    assert server.hits["/broken/VisA_20220922.tar"] == 1  # the same bytes again would not help
    _assert_nothing_left(data, "visa", registry)


def test_archive_laid_out_otherwise_gives_no_empty_manifest(server, catalogue, tmp_path, published):
    """KolektorSDD.zip with an extra top folder: the loader finds nothing, and says so."""
    members = zipfile.ZipFile(io.BytesIO(published["kolektorsdd_original"]))
    body = _zip({f"KolektorSDD/{name}": members.read(name) for name in members.namelist()})
    server.files["/other/kolektorsdd"] = body
    text = (catalogue / "downloads.toml").read_text().replace("https://go.vicos.si/", "https://example.org/other/")
    (catalogue / "downloads.toml").write_text(text)
    _pin(catalogue, {"kolektorsdd_original": hashlib.sha256(body).hexdigest()})
    data = tmp_path / "data"
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, ["kolektorsdd_original"], _options(data, server)).outcomes
    assert outcome.status == FAILED and "found no record" in outcome.detail, outcome.detail
    _assert_nothing_left(data, "kolektorsdd_original", registry)


def test_download_marks_copies_of_committed_records(server, catalogue, tmp_path, published):
    """A manifest written at download time is deduplicated against the committed ones at once;
    the committed manifest is never rewritten, so the downloaded copy is the one marked."""
    from daad.sources.ingest import ingest
    from daad.loaders import get_loader

    members = zipfile.ZipFile(io.BytesIO(published["kolektorsdd_original"]))
    copies = tmp_path / "mtd"
    for n in (1, 2):  # the two defective parts, republished as MTD-layout cracks (the same JPEG bytes)
        image = copies / "MT_Crack" / "Imgs" / f"kos{n:02d}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(members.read(f"kos{n:02d}/Part0.jpg"))
        label = Image.open(io.BytesIO(members.read(f"kos{n:02d}/Part0_label.bmp")))
        label.save(image.with_suffix(".png"))
    registry = Registry(catalogue, Roots({"mtd": copies}, data=tmp_path / "data"))
    ingest(get_loader("mtd").iter_records(copies, registry.catalogue["mtd"]), catalogue / "mtd.jsonl")
    committed = (catalogue / "mtd.jsonl").read_bytes()

    (outcome,) = prepare(registry, ["kolektorsdd_original"], _options(tmp_path / "data", server)).outcomes
    assert (outcome.status, outcome.duplicates) == (DOWNLOADED, 2), outcome
    marks = {r.id: r.duplicate_of for r in read_manifest(tmp_path / "data" / "manifests" / "kolektorsdd_original.jsonl")}
    assert marks == {"kolektorsdd_original/kos01/Part0": "mtd/Crack/kos01", "kolektorsdd_original/kos02/Part0": "mtd/Crack/kos02"}
    assert (catalogue / "mtd.jsonl").read_bytes() == committed
    assert sorted(p.name for p in catalogue.glob("*.jsonl")) == ["mtd.jsonl"]  # nothing written beside it

    # A build counts each picture once: the committed records, not the downloaded copies.
    result = _run("build", "--manifests", str(catalogue), "--out", "out", "-q", "--accept-licence", NC,
                  "--accept-licence", "unknown", "--root", f"mtd={copies}", "--origin", "kolektorsdd_original",
                  "--origin", "mtd", cwd=tmp_path,
                  env={"DAAD_DATA_DIR": str(tmp_path / "data"), "DAAD_DOWNLOAD_BASE_URL": server.url,
                       "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "build.json").read_text())["origins"] == {"mtd": 2}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "(`mtd`) | 2 | 0 | `unknown` | no | by itself: pinned commit, every image's sha256" in card

    # `daad download` says so in its table.
    shown = _run("download", "--manifests", str(catalogue), "--origin", "kolektorsdd_original", "--root",
                 f"mtd={copies}", "--accept-licence", NC, cwd=tmp_path,
                 env={"DAAD_DATA_DIR": str(tmp_path / "other"), "DAAD_DOWNLOAD_BASE_URL": server.url,
                      "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "300"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "2 near copies of other records marked" in shown.stdout
    assert "(`kolektorsdd_original`) | 0 | 2 | `CC-BY-NC-SA-4.0` | no | by itself: sha256-pinned archive" in card


def test_mvtec_loco_3d_and_ad2_download_by_themselves(server, catalogue, tmp_path, published):
    """MVTec LOCO and MVTec AD 2 (sha256) and MVTec 3D-AD (md5) from fake archives of their published trees."""
    writers = MORE
    assert "sha256" not in tomllib.loads((catalogue / "downloads.toml").read_text())["mvtec_3d"]
    data = tmp_path / "data"
    registry = Registry(catalogue, Roots(data=data))
    outcomes = {o.origin: o for o in prepare(registry, list(writers), _options(data, server)).outcomes}
    assert {o: outcomes[o].status for o in writers} == dict.fromkeys(writers, DOWNLOADED), outcomes
    assert outcomes["mvtec_3d"].detail.startswith("archive md5 verified; manifest of 5 records written (2 of them unmapped)")
    assert outcomes["mvtec_ad2"].detail.startswith("archive sha256 verified; manifest of 4 records written (4 of them")
    classes = {r.id: r.anomaly_class for r in read_manifest(data / "manifests" / "mvtec_3d.jsonl")}
    assert classes == {"mvtec_3d/bagel/test/combined/000": "unmapped", "mvtec_3d/bagel/test/crack/000": "crack",
                       "mvtec_3d/bagel/test/crack/001": "crack", "mvtec_3d/cable_gland/test/bent/000": "unmapped",
                       "mvtec_3d/cable_gland/test/thread/000": "abrasion"}
    loco = {r.id: r for r in read_manifest(data / "manifests" / "mvtec_loco.jsonl")}
    assert len(loco) == 12 and sum(r.anomaly_class != "unmapped" for r in loco.values()) == 5
    assert loco["mvtec_loco/pushpins/structural_anomalies/000/000"].anomaly_class == "crack"
    assert loco["mvtec_loco/pushpins/structural_anomalies/001/001"].native_label == "pushpins/contamination"

    # Other bytes under the same md5 pin: refused (fetched once more), nothing left.
    path = urlsplit(registry.catalogue["mvtec_3d"].download.url).path
    server.files[path] = published["mvtec_3d"] + b"x"
    data = tmp_path / "again"
    registry = Registry(catalogue, Roots(data=data))
    (outcome,) = prepare(registry, ["mvtec_3d"], _options(data, server)).outcomes
    assert outcome.status == FAILED and "md5_mismatch" in outcome.detail and "still wrong" in outcome.detail
    _assert_nothing_left(data, "mvtec_3d", registry)
    server.files[path] = published["mvtec_3d"]


def test_kolektorsdd2_downloads_by_itself_under_its_md5(server, catalogue, tmp_path, published):
    """KolektorSDD2.zip (train/ and test/ at its top) from the publisher's URL, pinned by the md5 its lab pins."""
    assert "sha256" not in tomllib.loads((catalogue / "downloads.toml").read_text())["ksdd2"]
    data = tmp_path / "data"
    outcome, registry = _prepare_one(catalogue, server, data, "ksdd2")
    assert outcome.status == DOWNLOADED, outcome
    assert outcome.detail.startswith("archive md5 verified; manifest of 3 records written (3 of them unmapped)")
    records = list(read_manifest(data / "manifests" / "ksdd2.jsonl"))
    assert sorted(r.id for r in records) == ["ksdd2/test/00006", "ksdd2/train/00001", "ksdd2/train/00002"]

    # Other bytes under the same pin: refused, nothing left.
    path = urlsplit(registry.catalogue["ksdd2"].download.url).path
    server.files[path] = published["ksdd2"] + b"x"
    data = tmp_path / "again"
    outcome, registry = _prepare_one(catalogue, server, data, "ksdd2")
    assert outcome.status == FAILED and "md5_mismatch" in outcome.detail
    _assert_nothing_left(data, "ksdd2", registry)
    server.files[path] = published["ksdd2"]


def test_adam_3d_downloads_by_itself_and_names_the_labels_its_catalogue_does_not_list(server, catalogue, tmp_path):
    """adam3d_cropped.zip as anomalib pins it (the categories under adam3d_cropped/): the manifest holds every masked
    defect image; a folder name the class map does not list is an unmapped record, named and counted in the outcome;
    an all-black mask, a missing mask and a 16-bit image are skipped by name, never records."""
    data = tmp_path / "data"
    outcome, registry = _prepare_one(catalogue, server, data, "adam_3d")
    assert (outcome.status, outcome.detail) == (DOWNLOADED, (
        "archive sha256 verified; manifest of 7 records written (2 of them unmapped; 1 of a native label the catalogue "
        "does not list: stringing 1); skipped: 1 empty_mask, 1 no_annotation, 1 unsupported_mode")), outcome
    records = {r.id: r for r in read_manifest(data / "manifests" / "adam_3d.jsonl")}
    assert {rid: (r.native_label, r.anomaly_class) for rid, r in records.items()} == {
        "adam_3d/1m1/test/bulge/000_C": ("bulge", "unmapped"), "adam_3d/1m1/test/crack/000_C": ("crack", "crack"),
        "adam_3d/1m1/test/hole/000_C": ("hole", "hole"), "adam_3d/1m1/test/hole/001_C": ("hole", "hole"),
        "adam_3d/spurgear/test/cut/000_C": ("cut", "crack"), "adam_3d/spurgear/test/scratch/000_C": ("scratch", "scratch"),
        "adam_3d/spurgear/test/stringing/000_C": ("stringing", "unmapped")}
    assert all(r.split == "test" and r.licence == NC and r.area > 0 for r in records.values())
    assert records["adam_3d/1m1/test/hole/000_C"].image.path == "1m1/test/hole/rgb/000_C.png"
    unpacked = {p.parent.name for p in (data / "adam_3d").rglob("*") if p.is_file()}
    assert unpacked == {"rgb", "ground_truth"}  # the xyz/ TIFFs stay in the archive (`keep`)
    state = json.loads((data / ".daad" / "adam_3d.json").read_text())
    assert (state["unmapped"], state["unlisted"]) == (2, {"stringing": 1})
    assert state["skipped"] == {"empty_mask": 1, "no_annotation": 1, "unsupported_mode": 1}
    # Defect-free images of all three splits are the origin's normals (train, validation and test 'good').
    normals = list(get_loader("adam_3d").iter_normals(data / "adam_3d"))
    assert Counter(n.split for n in normals) == Counter({"train": 4, "validation": 2, "test": 2})

    # Without `unlisted_classes` the same archive fails by name (as MVTec 3D-AD would) and leaves nothing.
    text = (catalogue / "sources.toml").read_text()
    (catalogue / "sources.toml").write_text(text.replace('unlisted_classes = "unmapped"\n', "", 1))
    data = tmp_path / "strict"
    outcome, registry = _prepare_one(catalogue, server, data, "adam_3d")
    assert outcome.status == FAILED and "native defect 'stringing' has no entry in sources.toml" in outcome.detail
    _assert_nothing_left(data, "adam_3d", registry)


def test_unlisted_classes_takes_only_unmapped(catalogue):
    text = (catalogue / "sources.toml").read_text()
    (catalogue / "sources.toml").write_text(text.replace('unlisted_classes = "unmapped"\n', 'unlisted_classes = "hole"\n', 1))
    with pytest.raises(CatalogueError, match="adam_3d.*unlisted_classes must be 'unmapped' when given, got 'hole'"):
        Catalogue.load(catalogue)


def test_sources_lists_3d_adam_and_its_rule_for_names_not_listed(catalogue):
    from typer.testing import CliRunner

    from daad.cli import app

    listed = CliRunner().invoke(app, ["sources", "--manifests", str(catalogue), "--json"])
    assert listed.exit_code == 0, listed.output
    entries = {e["id"]: e for e in json.loads(listed.output)}
    assert entries["adam_3d"]["unlisted_classes"] == "unmapped" and entries["mvtec_3d"]["unlisted_classes"] is None
    assert entries["adam_3d"]["download"].endswith("/3D-ADAM_anomalib/resolve/main/adam3d_cropped.zip")
    assert {k: v for k, v in entries["adam_3d"]["classes"].items() if v != "unmapped"} == {
        "color": "stain", "colour": "stain", "contamination": "impurity", "crack": "crack", "cracks": "crack",
        "cut": "crack", "cuts": "crack", "hole": "hole", "holes": "hole", "scratch": "scratch", "scratches": "scratch"}
    table = CliRunner().invoke(app, ["sources", "--manifests", str(catalogue)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "14 + names not listed" in table.output, table.output


def test_autovi_six_archives_unpack_into_one_source(server, catalogue, tmp_path, autovi):
    """A source published as several archives ([[autovi.parts]]): each fetched once and checked against its own
    sha256, all unpacked into one folder; one manifest for the whole."""
    data = tmp_path / "data"
    registry = Registry(catalogue, Roots(data=data))
    before = {c: server.hits[_autovi_path(registry.catalogue, c)] for c in autovi}
    (outcome,) = prepare(registry, ["autovi"], _options(data, server)).outcomes
    assert outcome.status == DOWNLOADED, outcome
    assert outcome.detail == "archive sha256 verified; manifest of 12 records written (11 of them unmapped)"
    assert {c: server.hits[_autovi_path(registry.catalogue, c)] - before[c] for c in autovi} == dict.fromkeys(autovi, 1)
    assert sorted(p.name for p in (data / "autovi").iterdir()) == sorted(autovi)
    records = {r.id: r for r in read_manifest(data / "manifests" / "autovi.jsonl")}
    assert records["autovi/engine_wiring/cardboard/0000/0000"].anomaly_class == "impurity"
    assert {r.id for r in records.values() if r.native_label == "engine_wiring/multiple"} == {
        "autovi/engine_wiring/multiple/0000/0000", "autovi/engine_wiring/multiple/0000/0001"}
    state = json.loads((data / ".daad" / "autovi.json").read_text())
    assert [state["archive_sha256"], *state["parts_sha256"]] == [_sha256(b) for b in autovi.values()]
    assert not list((data / ".daad" / "archives").iterdir())  # every archive removed once unpacked


def test_autovi_one_wrong_part_leaves_nothing(server, catalogue, tmp_path, autovi):
    digests = [_sha256(b) for b in autovi.values()]
    digests[3] = _sha256(autovi["tank_screw"] + b"x")
    _pin(catalogue, {"autovi": digests})
    data = tmp_path / "data"
    outcome, registry = _prepare_one(catalogue, server, data, "autovi")
    assert outcome.status == FAILED and "sha256_mismatch" in outcome.detail and "tank_screw.zip" in outcome.detail
    _assert_nothing_left(data, "autovi", registry)
    assert not list((data / ".daad" / "archives").iterdir())  # the three verified before it are gone too


def test_overlapping_parts_are_refused(server, catalogue, tmp_path, autovi):
    """A part holding a file an earlier archive already put there: a named layout error, nothing left."""
    members = zipfile.ZipFile(io.BytesIO(autovi["engine_wiring"]))
    body = _zip({"pipe_clip/readme.md": b"x\n", "engine_wiring/defects_config.json": members.read("engine_wiring/defects_config.json")})
    server.files["/overlap/pipe_clip.zip"] = body
    text = (catalogue / "downloads.toml").read_text().replace(
        "https://zenodo.org/records/10459003/files/pipe_clip.zip", "https://example.org/overlap/pipe_clip.zip")
    (catalogue / "downloads.toml").write_text(text)
    digests = [_sha256(b) for b in autovi.values()]
    digests[1] = _sha256(body)
    _pin(catalogue, {"autovi": digests})
    data = tmp_path / "data"
    outcome, registry = _prepare_one(catalogue, server, data, "autovi")
    assert outcome.status == FAILED and "overlap" in outcome.detail and "defects_config.json" in outcome.detail
    _assert_nothing_left(data, "autovi", registry)


def test_a_part_pinned_otherwise_is_refused(catalogue):
    text = (catalogue / "downloads.toml").read_text()
    part = '[[autovi.parts]]\nurl = "https://zenodo.org/records/10459003/files/pipe_clip.zip?download=1"\n'
    start = text.index(part)
    end = text.index("\n\n", start)
    (catalogue / "downloads.toml").write_text(text[:start] + part + text[end:])  # its sha256 dropped
    with pytest.raises(CatalogueError, match="part 1 .*pipe_clip.zip.* is not pinned like the first archive"):
        Catalogue.load(catalogue)


def test_loco_archive_with_faults_still_gives_its_manifest(server, catalogue, tmp_path):
    """A LOCO archive whose masks or configs are faulty: every other defect is written, each fault counted by name."""
    tree = tmp_path / "tree"
    expected = fake.write_mvtec_loco_with_faults(tree)
    body = _tar(_files(tree), "w:xz")
    server.files["/faulty/mvtec_loco.tar.xz"] = body
    text = (catalogue / "downloads.toml").read_text()
    url = tomllib.loads(text)["mvtec_loco"]["url"]
    (catalogue / "downloads.toml").write_text(text.replace(url, "https://example.org/faulty/mvtec_loco.tar.xz"))
    _pin(catalogue, {"mvtec_loco": _sha256(body)})
    data = tmp_path / "data"
    (outcome,) = prepare(Registry(catalogue, Roots(data=data)), ["mvtec_loco"], _options(data, server)).outcomes
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(expected.skipped.items()))
    assert (outcome.status, outcome.detail) == (
        DOWNLOADED, f"archive sha256 verified; manifest of 12 records written (7 of them unmapped); skipped: {skipped}")
    assert json.loads((data / ".daad" / "mvtec_loco.json").read_text())["skipped"] == expected.skipped
    assert len(list(read_manifest(data / "manifests" / "mvtec_loco.jsonl"))) == expected.total == 12
