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
