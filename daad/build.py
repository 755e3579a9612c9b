"""``daad build``: manifests + roots -> a dataset folder that ``datasets.load_dataset`` reads.

Layout: ``README.md`` (card: YAML ``configs`` and ``dataset_info``, counts, citations,
licences), ``data/<origin>/<class>.parquet`` shards, and ``build.json`` (the counts and
the sha256 of every manifest read). Image bytes are stored as they came; masks as PNG.
Same manifests in, same bytes out; the output is swapped in atomically, so a failed or
killed build leaves the previous one intact.

Manifest lines are parsed, checked and turned into rows (image read and sha256-checked,
mask encoded) in forked worker processes, a chunk of lines at a time; the parent gets the
chunks back in line order, checks the ids' order and writes the shards, so the bytes do
not depend on the number of workers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from daad.card import DUP_MARK, registry_card
from daad.errors import DaadError, PathEscapeError, RecordFileError, RootNotFoundError
from daad.features import REGISTRY_FEATURES
from daad.images import read_verified, sha256_file
from daad.licences import LicencePolicy
from daad.manifest import IdOrder, parse_line
from daad.masks import encode_png
from daad.processes import default_workers, fork_map
from daad.record import Record
from daad.registry import Registry
from daad.shards import DatasetFolderWriter, image_cell
from daad.taxonomy import ANOMALY_CLASSES, UNMAPPED, Status

CHUNK = 64


class BuildError(DaadError):
    """Some records could not be built; the previous output was left untouched."""

    def __init__(self, summary: BuildSummary) -> None:
        self.summary = summary
        lines = [f"{len(summary.errors)} record(s) rejected; previous output left untouched:"]
        lines += [f"  {e}" for e in summary.errors[:20]]
        if len(summary.errors) > 20:
            lines.append(f"  ... and {len(summary.errors) - 20} more")
        super().__init__("\n".join(lines))


@dataclass
class BuildSummary:
    """Counts of one build: rows written, records rejected (with reasons) and skipped."""

    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    """(anomaly_class, source, licence) -> rows."""
    origins: Counter = field(default_factory=Counter)
    image_bytes: int = 0
    licence_policy: str = "all"

    def line(self) -> str:
        rej = sum(self.rejected.values())
        skip = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"built {self.accepted} rows from {len(self.origins)} origin(s); rejected {rej}; skipped: {skip}"

    def to_json(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "origins": dict(sorted(self.origins.items())),
            "counts": [
                {"anomaly_class": c, "source": s, "licence": lic, "rows": n}
                for (c, s, lic), n in sorted(self.counts.items())
            ],
        }


def shard_of(record: Record, near_copy_of: list[str] | None = None) -> str:
    """The shard a record's row goes to: ``data/<origin>/<class>.parquet``, or
    ``<class>-dup-<E>[-<E2>...].parquet`` for a near copy of evaluation images (left out of ``no-<E>``)."""
    suffix = f"{DUP_MARK}{'-'.join(near_copy_of)}" if near_copy_of else ""
    return str(PurePosixPath("data", record.origin, f"{record.anomaly_class}{suffix}.parquet"))


def build(
    registry: Registry,
    out: Path,
    *,
    origins: list[str] | None = None,
    licence_policy: LicencePolicy | None = None,
    statuses: tuple[Status, ...] = (Status.ACCEPTED,),
    progress: bool = True,
    workers: int | None = None,
) -> BuildSummary:
    """Build the registry into ``out`` with ``workers`` processes (default: one per CPU).

    Raises :class:`BuildError` (output untouched) on bad records.
    """
    policy = licence_policy or LicencePolicy.everything()
    summary = BuildSummary(licence_policy=policy.name)
    manifests = registry.manifests(origins)
    total = sum(_count_lines(p) for p in manifests)
    registry.rules.near_duplicate_evaluations(())  # load the hash indices once, before the workers fork
    chunks = fork_map(_prepare, (registry, policy, statuses), _chunks(manifests), workers or default_workers())
    with DatasetFolderWriter(out, REGISTRY_FEATURES) as writer:
        bar = tqdm(total=total, unit="rec", desc="build", disable=not progress)
        for manifest, group in groupby(chunks, key=itemgetter(0)):
            shards: set[str] = set()
            order = IdOrder(manifest)
            for _, prepared in group:
                for lineno, record, result in prepared:
                    order.check(lineno, record.id)
                    bar.update(1)
                    if isinstance(result, str):
                        summary.skipped[result] += 1
                    elif isinstance(result, DaadError):
                        summary.rejected[getattr(result, "reason", "error")] += 1
                        summary.errors.append(str(result))
                    else:
                        shard, row, nbytes = result
                        shards.add(shard)
                        writer.write(shard, row, nbytes)
                        summary.accepted += 1
                        summary.image_bytes += nbytes
                        summary.counts[(record.anomaly_class, str(record.source), record.licence)] += 1
                        summary.origins[record.origin] += 1
            for shard in sorted(shards):
                writer.close_shard(shard)
        bar.close()
        if summary.errors:
            raise BuildError(summary)
        files = sorted(writer.rows_written)
        writer.write_file("README.md", registry_card(registry, summary, files))
        build_info = summary.to_json() | {
            "manifests": {p.name: sha256_file(p) for p in manifests},
            "licence_policy": policy.name,
        }
        writer.write_file("build.json", json.dumps(build_info, indent=2, sort_keys=True) + "\n")
        writer.commit()
    return summary


Prepared = tuple[int, Record, "str | DaadError | tuple[str, dict, int]"]
"""A manifest line once prepared: line number, record, and a skip reason, the error, or
``(shard, row, nbytes)``."""


def _chunks(manifests: list[Path]) -> Iterator[tuple[Path, list[tuple[int, str]]]]:
    """``(manifest, [(line number, line), ...])`` of every manifest, ``CHUNK`` lines at a time."""
    for manifest in manifests:
        with open(manifest, encoding="utf-8") as f:
            lines = enumerate(f, start=1)
            while chunk := list(islice(lines, CHUNK)):
                yield manifest, chunk


def _prepare(
    job: tuple[Registry, LicencePolicy, tuple[Status, ...]], chunk: tuple[Path, list[tuple[int, str]]]
) -> tuple[Path, list[Prepared]]:
    """Parse, select and turn into rows the lines of one chunk (in a worker). Bad lines raise ``ManifestError``."""
    registry, policy, statuses = job
    manifest, lines = chunk
    records = [(lineno, parse_line(manifest, lineno, line)) for lineno, line in lines]
    reasons = [_skip_reason(record, policy, statuses) for _, record in records]
    near_copies = registry.rules.near_duplicate_evaluations(r for (_, r), why in zip(records, reasons) if why is None)
    prepared = []
    for (lineno, record), reason in zip(records, reasons):
        if reason is None:
            result = _row(registry, record)
            if not isinstance(result, DaadError):
                row, nbytes = result
                result = (shard_of(record, near_copies.get(record.id)), row, nbytes)
        else:
            result = reason
        prepared.append((lineno, record, result))
    return manifest, prepared


def _skip_reason(record: Record, policy: LicencePolicy, statuses: tuple[Status, ...]) -> str | None:
    """Why ``record`` stays out of the build (counted as skipped), or ``None``."""
    if record.status not in statuses:
        return f"status:{record.status}"
    if record.anomaly_class == UNMAPPED:
        return "unmapped_class"
    if not policy.allows(record.licence):
        return f"licence_policy:{record.licence}"
    return None


def _row(registry: Registry, record: Record) -> tuple[dict, int] | DaadError:
    """One shard row for ``record`` (bytes verified against the manifest), or the error."""
    assert record.anomaly_class in ANOMALY_CLASSES
    try:
        view_path = registry.image_path(record)
        data = read_verified(view_path, record.image.sha256, record.id)
        if record.mask is None:
            raise RecordFileError(record.id, view_path, "no_mask", "record has no mask")
        mask_png = encode_png(record.mask.decode())
    except (RecordFileError, PathEscapeError, RootNotFoundError) as exc:
        return exc
    name = PurePosixPath(record.image.path or record.image.url or record.id).name
    row = {
        "id": record.id,
        "image": image_cell(data, name),
        "mask": image_cell(mask_png, f"{PurePosixPath(name).stem}_mask.png"),
        "anomaly_class": ANOMALY_CLASSES.index(record.anomaly_class),
        "source": str(record.source),
        "origin": record.origin,
        "native_label": record.native_label,
        "licence": record.licence,
        "width": record.width,
        "height": record.height,
        "bbox": list(record.bbox) if record.bbox else None,
        "area": record.area,
        "phash": record.phash,
        "image_sha256": record.image.sha256,
        "split": record.split,
        "url": record.image.url,
        "page_url": record.page_url,
    }
    return row, len(data) + len(mask_png)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)
