"""One FiftyOne database for the whole test run (mongod starts once), plus the real
SD-saliency-900 subset the curation tests open."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from daad.curate.session import CurationSession
from daad.registry.manifest import read_manifest, write_manifest
from daad.record import Record

PER_CLASS = 10
_SESSION: CurationSession | None = None


def shared_session() -> CurationSession:
    """The run's curation session; its processes stop at interpreter exit (``atexit``)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = CurationSession(tempfile.mkdtemp(prefix="daad-test-fiftyone-"))
        _SESSION.start_database()
        import atexit

        atexit.register(shutil.rmtree, _SESSION.database_dir, True)
    return _SESSION


def subset_manifests(dest: Path) -> Path:
    """Scratch manifests holding the first ``PER_CLASS`` records of each SD-saliency-900 class
    (of those not marked ``duplicate_of``: a near copy is left out of every view)."""
    from conftest import copy_manifests

    manifests = copy_manifests(dest, "sd_saliency_900")
    path = manifests / "sd_saliency_900.jsonl"
    taken: dict[str, list[Record]] = {}
    for record in read_manifest(path):
        if record.duplicate_of is None and len(taken.setdefault(record.anomaly_class, [])) < PER_CLASS:
            taken[record.anomaly_class].append(record)
    write_manifest(path, [r for rs in taken.values() for r in rs])
    return manifests


def annotation_registry(tmp_path_factory, name: str, mp) -> tuple[Registry, list[Record], list[Record]]:
    """A registry of every real DAAD online-list record (5 of them needing a mask are returned as
    ``need``) and 2 real SD-saliency-900 records with their masks (``sd``), for the annotate tests.
    ``mp`` (a ``pytest.MonkeyPatch`` the caller keeps while it uses the registry) points
    ``$DAAD_CACHE_DIR`` at the fetch cache holding the online list's images."""
    from conftest import SD_ROOT, SHARED_DATA, copy_manifests, split_items
    from daad.loaders.daad_online_sources import iter_records
    from daad.registry import Registry
    from daad.registry.roots import Roots
    from daad.taxonomy import Status

    online = SHARED_DATA / "daad-online-sources"
    mp.setenv("DAAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "daad-cache"))  # the autouse fixture's
    items, _ = split_items(iter_records(online))  # decodes the sheet's inline images into the fetch cache
    manifests = copy_manifests(tmp_path_factory.mktemp(name) / "manifests", "sd_saliency_900")
    need = [r for r in items if r.status == Status.NEEDS_MASK and r.duplicate_of is None][:5]
    write_manifest(manifests / "daad_online_sources.jsonl", items)
    sd_path = manifests / "sd_saliency_900.jsonl"
    sd = [r for r in read_manifest(sd_path) if r.duplicate_of is None][:2]
    write_manifest(sd_path, sd)
    return Registry(manifests, Roots({"sd_saliency_900": SD_ROOT, "daad_online_sources": online})), need, sd
