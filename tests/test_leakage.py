"""Leakage: the near-duplicate index, leak-free views, near-copy shards in builds and `daad audit`.

Real data: KolektorSDD (YOLO-seg release) and SD-saliency-900 from the shared data folder;
a KolektorSDD image is planted, flipped, resized and re-encoded, in another origin.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from benchmarks.leakage import TRANSFORMS, jpeg, near_copies, tile_photographs
from conftest import REPO, SD_ROOT, SHARED_DATA, copy_manifests
from daad.dataset.build import build
from daad.cli import app
from daad.errors import LeakageError
from daad.registry.catalogue import Catalogue
from daad.registry.exclusion import EvaluationHashes, ExclusionError, ExclusionRule, ExclusionRules
from daad.registry.registry import require_view
from daad.images import sha256_file
from daad.registry.manifest import read_manifest, write_manifest
from daad.masks import RLE
from daad.registry.neardup import (
    FINE_THRESHOLD, THRESHOLD, VARIANTS, HashIndex, dihedral, fine_distance, fine_signature, image_hash,
    pairwise_matches, query_signature, variant_hashes,
)
from daad.record import ImageRef
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.base import Synthesis
from daad.synthesis.output import write_generated

KSDD_ROOT = SHARED_DATA / "kolektorsdd-yolo"
KSDD_IMAGES = sorted((KSDD_ROOT / "Datasets" / "images").glob("*/*.jpg"))
SD_IMAGES = sorted((SD_ROOT / "Source Images").glob("*.bmp"))
CF_IMAGES = sorted((SHARED_DATA / "crackforest" / "image").glob("*.jpg"))


def _load(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


# --- the index --------------------------------------------------------------------------

def test_hash_index_agrees_with_pairwise_check():
    rng = np.random.default_rng(5)
    indexed = rng.integers(0, 2**64, size=4000, dtype=np.uint64)
    flips = np.zeros(300, dtype=np.uint64)
    for i in range(300):  # i-th query: indexed[i] with (i % 14) random bits flipped
        for bit in rng.choice(64, size=i % 14, replace=False):
            flips[i] |= np.uint64(1) << np.uint64(bit)
    indexed[3999] = indexed[7]  # a tie: the lower index wins
    queries = np.concatenate([indexed[:300] ^ flips, rng.integers(0, 2**64, size=2000, dtype=np.uint64)])
    index = HashIndex(indexed)
    matches = index.query(queries)  # fewer queries than indexed hashes: the queries probe the index
    assert np.array_equal(matches.index >= 0, pairwise_matches(queries, indexed))
    near = np.arange(300) % 14 <= THRESHOLD
    assert np.array_equal(matches.index[:300][near], np.arange(300)[near])
    assert np.array_equal(matches.distance[:300][near], (np.arange(300) % 14)[near])
    assert (matches.index[:300][~near] == -1).all()
    many = np.concatenate([queries] * 2)  # more queries than indexed hashes: they are filed, the index probes
    filed = index.query(many)
    assert np.array_equal(filed.index, np.concatenate([matches.index] * 2))
    assert np.array_equal(filed.distance, np.concatenate([matches.distance] * 2))
    pairs = index.pairs(many)  # every pair within the threshold, once
    d = np.bitwise_count(many[:, None] ^ indexed[None, :])
    assert sorted(zip(pairs.query.tolist(), pairs.index.tolist())) == sorted(zip(*map(list, np.nonzero(d <= THRESHOLD))))
    assert np.array_equal(pairs.distance, d[pairs.query, pairs.index])


def test_near_copies_of_real_images_are_caught_and_distinct_images_are_not():
    """A seeded subsample of KolektorSDD + SD-saliency-900 + CrackForest (the benchmark runs every image),
    every transform of the benchmark (the eight dihedral ones among them), hash then fine signature."""
    rng = np.random.default_rng(0)
    paths = [KSDD_IMAGES[i] for i in rng.choice(len(KSDD_IMAGES), 20, replace=False)]
    paths += [SD_IMAGES[i] for i in rng.choice(len(SD_IMAGES), 40, replace=False)]
    paths += [CF_IMAGES[i] for i in rng.choice(len(CF_IMAGES), 15, replace=False)]
    images = _load(paths)
    stored = EvaluationHashes.of_images((str(i), p) for i, p in enumerate(paths))

    def thumb(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32)

    def same_picture(i: int, j: int) -> bool:  # KolektorSDD-YOLO publishes some pictures twice
        return i == j or np.abs(thumb(images[i]) - thumb(images[j])).mean() < 3

    caught = total = 0
    for name, transform in TRANSFORMS.items():
        found = near_copies(stored, [transform(im) for im in images])
        assert all(same_picture(m.image, i) for i, m in enumerate(found) if m is not None), name
        assert all(m.share <= FINE_THRESHOLD for m in found if m is not None), name
        caught += sum(m is not None for m in found)
        total += len(images)
    assert caught / total >= 0.99, f"caught {caught} of {total} transformed copies"

    # each real image against every other image's stored hashes: none confirmed, except where the
    # release itself holds the same picture twice (KolektorSDD-YOLO repeats some images)
    pairs = HashIndex(stored.hashes).pairs([image_hash(im) for im in images])
    fine = [query_signature(im) for im in images]
    confirmed = {
        (q, hit // VARIANTS, hit % VARIANTS) for q, hit in zip(pairs.query.tolist(), pairs.index.tolist())
        if hit // VARIANTS != q and fine_distance(stored.fine[hit // VARIANTS], hit % VARIANTS, fine[q]) <= FINE_THRESHOLD
    }

    distinct = [
        (paths[i].name, paths[j].name) for i, j, v in confirmed
        if np.abs(thumb(images[i]) - thumb(dihedral(images[j], v % 8))).mean() >= 3
    ]
    assert distinct == []


def test_every_dihedral_transform_of_real_sd_saliency_images_is_matched_to_its_image():
    """A 90° rotation is ~32 bits from the image's pHash: only the dihedral variants find it."""
    paths = SD_IMAGES[::45]
    images = _load(paths)
    stored = EvaluationHashes.of_images((p.stem, p) for p in paths)
    plain = np.array([image_hash(im) for im in images], dtype=np.uint64)
    for k in range(8):
        rotated = [dihedral(im, k) for im in images]
        if k >= 4:  # the transposing ones (90° and 270° rotations among them) move the pHash far
            far = np.bitwise_count(plain ^ np.array([image_hash(im) for im in rotated], dtype=np.uint64)) > THRESHOLD
            assert far.mean() > 0.9, k
        for copy in (rotated, [jpeg(im, 30) for im in rotated]):
            found = near_copies(stored, copy)
            assert [stored.image_ids[m.image] if m else None for m in found] == [p.stem for p in paths], k


def test_photographs_of_one_near_uniform_tile_are_not_copies_but_their_copies_are():
    """Same tile, other exposure and grain: the hashes match, the fine signatures do not."""
    photos = tile_photographs(7, 24)
    stored = EvaluationHashes(
        tuple(map(str, range(len(photos)))),
        np.array([variant_hashes(p) for p in photos], dtype=np.uint64),
        np.array([fine_signature(p) for p in photos]),
    )
    hashes = np.array([image_hash(p) for p in photos], dtype=np.uint64)
    within = np.bitwise_count(hashes[:, None] ^ stored.variants[:, 0][None, :]) <= THRESHOLD
    assert (within.sum(axis=1) > 1).mean() > 0.9  # nearly every photograph hashes like another one
    index = HashIndex(stored.hashes)
    found = stored.matches(index, list(hashes), lambda q: query_signature(photos[q]))
    assert [m.image for m in found] == list(range(len(photos)))  # only itself, never another photograph
    copies = [jpeg(ImageOps.mirror(p).point(lambda v: min(255, v + 20)), 40) for p in photos]
    found = near_copies(stored, copies)
    assert [m.image if m else None for m in found] == list(range(len(photos)))
    unconfirmed = stored.matches(index, list(hashes), lambda q: None)  # without the image: hash alone
    assert all(m is not None and m.share is None for m in unconfirmed)


# --- views, builds and audit on a planted copy -------------------------------------------

@pytest.fixture
def planted(tmp_path) -> dict:
    """Manifests with 5 KolektorSDD records, 6 SD-saliency-900 records and, in the
    `daad_online_sources` origin, a flipped/resized/JPEG copy of a KolektorSDD image;
    evaluation hashes of the KolektorSDD images those records use."""
    manifests = copy_manifests(tmp_path / "manifests")
    ksdd = list(read_manifest(Path(__file__).parent.parent / "manifests" / "kolektorsdd.jsonl"))[:5]
    sd = list(read_manifest(Path(__file__).parent.parent / "manifests" / "sd_saliency_900.jsonl"))[:6]
    write_manifest(manifests / "kolektorsdd.jsonl", ksdd)
    write_manifest(manifests / "sd_saliency_900.jsonl", sd)

    web_root = tmp_path / "web"
    web_root.mkdir()
    original = KSDD_ROOT / ksdd[2].image.path
    with Image.open(original) as image:
        copy = jpeg(ImageOps.mirror(image.convert("RGB").resize((250, 627))), 25)
    copy.save(web_root / "found_online.jpg", quality=95)
    with Image.open(web_root / "found_online.jpg") as image:
        phash = f"{image_hash(image):016x}"
    mask = np.zeros((627, 250), np.uint8)  # the image's size: the build checks it
    mask[300:340, 100:140] = 1
    web = replace(
        sd[0], id="daad_online_sources/found_online", origin="daad_online_sources", source="online_search",
        anomaly_class="crack", native_label="crack", licence="CC-BY-4.0", image=ImageRef("found_online.jpg", None, sha256_file(web_root / "found_online.jpg")),
        phash=phash,
    ).with_mask(RLE.encode(mask))
    write_manifest(manifests / "daad_online_sources.jsonl", [web])

    normals = [p for p in KSDD_IMAGES if p.name in {"000.jpg", "001.jpg"}]
    stored = EvaluationHashes.of_images(
        [(r.id, KSDD_ROOT / r.image.path) for r in ksdd] + [(f"kolektorsdd/normal/{p.stem}", p) for p in normals]
    )
    stored.write(ExclusionRules.load(manifests).hashes_path("kolektorsdd"), "test hashes")
    roots = Roots({"kolektorsdd": KSDD_ROOT, "sd_saliency_900": SD_ROOT, "daad_online_sources": web_root})
    return {"manifests": manifests, "roots": roots, "ksdd": ksdd, "sd": sd, "web": web, "original": ksdd[2]}


def test_kolektorsdd_view_never_yields_kolektorsdd_or_a_planted_copy(planted):
    registry = Registry(planted["manifests"], planted["roots"])
    with pytest.raises(LeakageError, match="leak-free registry view"):
        require_view(registry)
    view = registry.view(evaluation="kolektorsdd")
    require_view(view)
    ids = [r.id for r in view]
    assert ids == [r.id for r in planted["sd"]]
    reasons = dict((r.id, reason) for r, reason in view.decisions())
    assert reasons["daad_online_sources/found_online"].startswith(f"near copy of kolektorsdd image {planted['original'].id}")
    assert all("origin kolektorsdd is excluded" in reasons[r.id] for r in planted["ksdd"])
    # the same registry without the evaluation guard keeps the planted copy
    assert "daad_online_sources/found_online" in {r.id for r in registry.view(evaluation="none")}
    assert "daad_online_sources/found_online" in {r.id for r in registry.view(evaluation="sd_saliency_900")}


def test_build_puts_near_copies_in_shards_the_leak_free_config_leaves_out(planted, tmp_path):
    registry = Registry(planted["manifests"], planted["roots"])
    out = tmp_path / "built"
    build(registry, out, progress=False)
    assert (out / "data" / "daad_online_sources" / "crack-dup-kolektorsdd.parquet").is_file()
    leak_free = datasets.load_dataset(str(out), "no-kolektorsdd", split="train")
    assert sorted(leak_free["id"]) == sorted(r.id for r in planted["sd"])
    everything = datasets.load_dataset(str(out), "default", split="train")
    assert "daad_online_sources/found_online" in everything["id"]
    assert "daad_online_sources/found_online" in datasets.load_dataset(str(out), "no-sd_saliency_900", split="train")["id"]


def test_audit_names_each_violation_and_passes_a_clean_dataset(planted, tmp_path):
    runner = CliRunner()
    blank = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)

    def generate(out: Path, sources: list[tuple[str, ...]]) -> None:
        rows = [Synthesis(blank, mask, "crack", "target/0", s) for s in sources]
        write_generated(out, rows, generator="test", params={}, seed=0, evaluation="kolektorsdd", progress=False)

    clean, leaky = tmp_path / "clean", tmp_path / "leaky"
    generate(clean, [(planted["sd"][0].id,), (planted["sd"][1].id, planted["sd"][2].id)])
    generate(leaky, [(planted["sd"][0].id,), (planted["web"].id, planted["ksdd"][0].id), ("nowhere/x",)])
    args = ["--manifests", str(planted["manifests"]), "--eval", "kolektorsdd"]

    result = runner.invoke(app, ["audit", str(clean), *args])
    assert result.exit_code == 0, result.output
    assert "0 violation(s)" in result.output

    result = runner.invoke(app, ["audit", str(leaky), *args])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "test/0000001 used daad_online_sources/found_online: near copy of kolektorsdd image" in text
    assert f"test/0000001 used {planted['ksdd'][0].id}: origin kolektorsdd is excluded" in text
    assert "test/0000002 used nowhere/x: not in the registry" in text
    assert "3 violation(s)" in text


def test_exclusions_hash_command_hashes_anomalous_and_normal_images(tmp_path):
    manifests = copy_manifests(tmp_path / "manifests")
    root = SHARED_DATA / "crackforest"
    result = CliRunner().invoke(app, ["exclusions", "hash", "crackforest", "--root", f"crackforest={root}", "--manifests", str(manifests), "-q"])
    assert result.exit_code == 0, result.output
    stored = ExclusionRules.load(manifests).hashes("crackforest")
    images = {i for i in stored.image_ids}
    assert len(images) == len(list((root / "image").glob("*.jpg")))
    first = sorted((root / "image").glob("*.jpg"))[0]
    (row,) = [n for n, i in enumerate(stored.image_ids) if i.endswith(f"/{first.stem}")]
    with Image.open(first) as image:
        assert stored.variants[row].tolist() == variant_hashes(image)
        assert np.array_equal(stored.fine[row], fine_signature(image))


def test_rules_must_exclude_their_own_origin_and_hash_files_are_checked(tmp_path):
    (tmp_path / "exclusions.toml").write_text('[visa]\norigins = ["mvtec_ad"]\n')
    with pytest.raises(ExclusionError, match="must exclude its own origin 'visa'"):
        ExclusionRules.load(tmp_path)
    (tmp_path / "exclusions.toml").write_text('[visa]\norigins = ["visa"]\n')
    rules = ExclusionRules.load(tmp_path)
    assert rules.hashes("visa") is None
    rules.hashes_path("visa").parent.mkdir()
    rules.hashes_path("visa").write_text("# header\nnot-a-hash visa/1\n")
    with pytest.raises(ExclusionError, match=r"visa.txt:2: expected"):
        rules.hashes("visa")


def test_default_rules_come_from_the_catalogue_and_a_table_replaces_one(tmp_path):
    """Each ``evaluation = true`` origin excludes its derived_from family (both directions), with
    near copies; exclusions.toml only overrides. An origin added with ``derived_from`` joins its family."""
    for name in ("sources.toml", "licences.toml"):
        shutil.copy(REPO / "manifests" / name, tmp_path / name)
    (tmp_path / "exclusions.toml").write_text("# defaults only\n")
    rules = ExclusionRules.load(tmp_path)
    evaluation = sorted(e.id for e in Catalogue.load(tmp_path) if e.evaluation)
    assert sorted(rules.rules) == evaluation and len(evaluation) == 12  # bsdata became one with its evaluation set
    assert rules.rule("kolektorsdd").origins == ("kolektorsdd", "kolektorsdd_original")  # what it re-publishes
    assert rules.rule("sd_saliency_900").origins == ("sd_saliency_900", "neu_seg")  # what re-publishes it
    assert rules.rule("mvtec_ad").origins == ("mvtec_ad",) and all(r.near_duplicates for r in rules.rules.values())
    assert "neu_seg" not in rules.rules  # derived, but not an evaluation dataset itself

    with open(tmp_path / "sources.toml", "a", encoding="utf-8") as f:
        f.write('\n[mvtec_ad_copy]\nname = "A copy"\nhomepage = "https://example.org"\nlicence = "CC-BY-NC-SA-4.0"\n'
                'derived_from = ["mvtec_ad"]\n')
    (tmp_path / "exclusions.toml").write_text('[crackforest]\nnear_duplicates = false\n')
    rules = ExclusionRules.load(tmp_path)
    assert rules.rule("mvtec_ad").origins == ("mvtec_ad", "mvtec_ad_copy")
    assert rules.rule("crackforest") == ExclusionRule("crackforest", ("crackforest",), near_duplicates=False)
