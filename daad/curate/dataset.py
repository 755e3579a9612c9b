"""Registry records and generated shards as persistent FiftyOne datasets.

A registry sample holds the image file (from its origin's root or the fetch cache),
``ground_truth`` (a :class:`fiftyone.Segmentation` whose ``mask_path`` is a 0/255 PNG
written to the mask cache), ``anomaly_class`` (a :class:`fiftyone.Classification`),
the record's provenance fields, its status as a ``status:<value>`` tag, and
``manifest_line``: the record's manifest line at open time, whose sha256 prefix is
``fingerprint``. :mod:`daad.curate.sync` compares the sample against that line to find
the curator's edits, and the line against the manifest to find conflicts.

Re-opening keeps samples whose manifest line is unchanged (with any edits made to
them), refreshes the ones whose line changed, and drops samples no longer selected, but
never a sample holding edits not yet synced: opening refuses and names them
(:class:`UnsyncedEditsError`) unless ``discard_unsynced`` is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from daad.atomic import link_or_copy, write_atomically
from daad.curate.edits import unsynced
from daad.curate.fields import CLASS_FIELD, MASK_FIELD
from daad.curate.session import CurationEnvError, CurationSession
from daad.errors import DaadError, RecordFileError
from daad.registry.manifest import dumps
from daad.masks import encode_png
from daad.record import Record
from daad.registry import Registry
from daad.registry.roots import cache_dir
from daad.synthesis.output import encode_image_png, generator_info, read_generated

DEFAULT_NAME = "daad"
MASK_TARGETS = {255: "anomaly"}
MASK_COLOUR = "#ff3030"
STATUS_TAG = "status:"
KIND_REGISTRY, KIND_GENERATED = "registry", "generated"


class UnsyncedEditsError(DaadError):
    """Opening would drop samples whose curators' edits are not synced yet; names them."""

    def __init__(self, name: str, edits: dict[str, list[str]]) -> None:
        self.edits = edits
        shown = "; ".join(f"{rid} ({', '.join(fields)})" for rid, fields in list(edits.items())[:10])
        more = f" and {len(edits) - 10} more" if len(edits) > 10 else ""
        super().__init__(
            f"FiftyOne dataset {name!r}: {len(edits)} sample(s) with unsynced edits would be dropped "
            f"(not selected any more, or their manifest record changed): {shown}{more}; nothing changed. "
            f"Run `daad curate sync --name {name}` first, or re-run this open with --discard-unsynced to drop the edits"
        )


@dataclass
class OpenSummary:
    """What opening changed in the FiftyOne dataset."""

    name: str
    samples: int = 0
    added: int = 0
    refreshed: int = 0
    removed: int = 0
    kept: int = 0
    skipped: list[str] = field(default_factory=list)
    """Records left out (no local image, ...), with the reason."""


def fingerprint(line: str) -> str:
    """Short sha256 of one manifest line."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()[:16]


def mask_cache_dir() -> Path:
    return cache_dir() / "curate" / "masks"


def file_stem(record_id: str) -> str:
    """A file name stem for an id: readable, safe, unique (hash suffix)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", record_id.replace("/", "__"))
    return f"{safe}-{hashlib.sha1(record_id.encode('utf-8')).hexdigest()[:8]}"


def write_mask_png(mask, directory: Path, stem: str) -> Path:
    """Write a binary mask as an 8-bit 0/255 PNG (only when its bytes differ) and return its path.

    8-bit: the App decodes mask PNGs itself and takes a 2-bit file's raw values (0-3).
    """
    data = encode_png(mask, bits=8)
    path = directory / f"{stem}.png"
    if not path.exists() or path.read_bytes() != data:
        write_atomically(path, [data])
    return path


def open_records(
    session: CurationSession,
    registry: Registry,
    records: Iterable[Record],
    name: str = DEFAULT_NAME,
    *,
    masks_dir: Path | None = None,
    discard_unsynced: bool = False,
):
    """Load ``records`` into the persistent FiftyOne dataset ``name``; returns ``(dataset, summary)``.

    Raises :class:`UnsyncedEditsError` (changing nothing) when a sample it would drop or
    refresh holds unsynced edits, unless ``discard_unsynced``."""
    fo = session.fiftyone()
    masks_dir = (masks_dir or mask_cache_dir()) / name
    dataset = _dataset(fo, name, KIND_REGISTRY)
    if not dataset.has_sample_field("reason"):  # declared: a sync or an annotation may set what no record had
        dataset.add_sample_field("reason", fo.StringField)
    if not dataset.has_sample_field(MASK_FIELD):
        dataset.add_sample_field(MASK_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    existing = (
        dict(zip(dataset.values("record_id"), dataset.values("manifest_line")))
        if dataset.has_sample_field("record_id")
        else {}
    )
    summary = OpenSummary(name)
    selected: set[str] = set()
    new_samples, stale = [], []
    for record in records:
        line = dumps(record)
        selected.add(record.id)
        if existing.get(record.id) == line:
            summary.kept += 1
            continue
        try:
            new_samples.append(_record_sample(fo, registry, record, line, masks_dir))
        except DaadError as exc:
            selected.discard(record.id)
            summary.skipped.append(str(exc))
            continue
        if record.id in existing:
            stale.append(record.id)
            summary.refreshed += 1
        else:
            summary.added += 1
    gone = [rid for rid in existing if rid not in selected]
    if (stale or gone) and not discard_unsynced:
        _refuse_unsynced(dataset, stale + gone)
    dataset.info["manifests_dir"] = str(registry.manifests_dir.resolve())
    dataset.save()
    summary.removed = len(gone)
    if stale or gone:
        dataset.delete_samples(dataset.select_by("record_id", stale + gone))
    if new_samples:
        dataset.add_samples(new_samples, progress=False)
    summary.samples = len(dataset)
    return dataset, summary


def _refuse_unsynced(dataset, ids: list[str]) -> None:
    """Raise :class:`UnsyncedEditsError` if any sample of ``ids`` holds unsynced edits."""
    edits = {}
    for sample in dataset.select_by("record_id", ids).iter_samples(progress=False):
        if fields := unsynced(sample):
            edits[sample["record_id"]] = fields
    if edits:
        raise UnsyncedEditsError(dataset.name, dict(sorted(edits.items())))


def open_generated(session: CurationSession, path: Path, name: str | None = None, *, files_dir: Path | None = None):
    """Load a generated dataset folder (``daad synth ...`` output) for visual QA."""
    fo = session.fiftyone()
    path = Path(path)
    info = generator_info(path)
    name = name or f"daad-generated-{path.resolve().name}"
    files_dir = (files_dir or cache_dir() / "curate" / "generated") / name
    dataset = _dataset(fo, name, KIND_GENERATED)
    dataset.info.update({"generated_dir": str(path.resolve()), "generator": info["generator"],
                         "params": info["params"], "seed": info["seed"], "evaluation": info["evaluation"]})
    dataset.save()
    dataset.clear()
    samples = []
    for row in read_generated(path):
        stem = file_stem(row["id"])
        image_path = files_dir / f"{stem}.png"
        write_atomically(image_path, [encode_image_png(row["image"])])
        mask_path = write_mask_png(row["mask"], files_dir, f"{stem}_mask")
        height, width = row["mask"].shape
        sample = fo.Sample(
            filepath=str(image_path),
            metadata=fo.ImageMetadata(width=width, height=height),
            record_id=row["id"],
            generator=row["generator"],
            target_id=row["target_id"],
            source_ids=list(row["source_ids"]),
            seed=row["seed"],
            details=json.dumps(row["details"], sort_keys=True),
        )
        sample[MASK_FIELD] = fo.Segmentation(mask_path=str(mask_path))
        if row["anomaly_class"]:
            sample[CLASS_FIELD] = fo.Classification(label=row["anomaly_class"])
        samples.append(sample)
    dataset.add_samples(samples, progress=False)
    return dataset, OpenSummary(name, samples=len(dataset), added=len(samples))


def _dataset(fo, name: str, kind: str):
    """The persistent dataset ``name`` (created if needed), set up so masks show when the App opens."""
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.info.get("daad_kind") != kind:
            raise CurationEnvError(f"FiftyOne dataset {name!r} exists and is not a daad {kind} dataset")
    else:
        dataset = fo.Dataset(name, persistent=True)
        dataset.info["daad_kind"] = kind
    dataset.mask_targets = {MASK_FIELD: MASK_TARGETS}
    dataset.app_config.active_fields = fo.ActiveFields(paths=["tags", CLASS_FIELD, MASK_FIELD])
    red = [{"intTarget": 255, "color": MASK_COLOUR}]
    dataset.app_config.color_scheme = fo.ColorScheme(  # the mask field's own colour too, so no default shows
        opacity=0.6,
        default_mask_targets_colors=red,
        fields=[{"path": MASK_FIELD, "fieldColor": MASK_COLOUR, "maskTargetsColors": red}],
    )
    dataset.save()
    return dataset


def viewable_image(path: Path, record_id: str) -> Path:
    """``path``; for a fetched image (kept by hash, without a suffix) a hard link (else a copy)
    named with its format's suffix, from which FiftyOne and browsers tell it is an image."""
    if path.suffix:
        return path
    if not path.is_file():
        raise RecordFileError(record_id, path, "missing", "run `daad fetch` first")
    try:
        with Image.open(path) as image:
            suffix = "." + (image.format or "img").lower()
    except OSError as exc:
        raise RecordFileError(record_id, path, "corrupt_image", f"cannot read the image: {exc}") from None
    dest = cache_dir() / "curate" / "images" / f"{path.name}{suffix}"
    link_or_copy(path, dest)
    return dest


def _record_sample(fo, registry: Registry, record: Record, line: str, masks_dir: Path):
    sample = fo.Sample(
        filepath=str(viewable_image(registry.image_path(record), record.id)),
        tags=[f"{STATUS_TAG}{record.status}"],
        record_id=record.id,
        source=str(record.source),
        origin=record.origin,
        licence=record.licence,
        native_label=record.native_label,
        status=str(record.status),
        reason=record.reason,
        manifest_line=line,
        fingerprint=fingerprint(line),
    )
    sample[CLASS_FIELD] = fo.Classification(label=record.anomaly_class)
    if record.width and record.height:
        sample.metadata = fo.ImageMetadata(width=record.width, height=record.height)
    if record.mask is not None:
        path = write_mask_png(record.mask.decode(), masks_dir / record.origin, file_stem(record.id))
        sample[MASK_FIELD] = fo.Segmentation(mask_path=str(path))
        sample["opened_mask_path"] = str(path)
    return sample
