"""``daad build``: manifests + roots -> a dataset folder that ``datasets.load_dataset`` reads.

Layout: ``README.md`` (card: YAML ``configs`` and ``dataset_info``, counts, citations,
licences), ``data/<origin>/<class>.parquet`` shards, ``images/samples.png`` (the card's
sample grid, drawn from the shards) and ``build.json`` (the counts and the sha256 of every
manifest read). Image bytes are stored as they came; masks as PNG.
Same manifests in, same bytes out; the output is swapped in atomically, so a failed or
killed build leaves the previous one intact.

With ``reuse=True`` (``daad build --reuse``), an origin whose inputs (manifest bytes,
exclusion rules and evaluation hashes, licence policy, statuses, build format) are those
of the previous build in ``out`` keeps that build's shards (hard-linked after their sha256
is checked): its rows are a function of those inputs alone, as every image is pinned by
its sha256 (origins with unpinned images are always rebuilt). Its image files are then not
read again; ``daad validate`` (or a build without reuse, the default) checks them.

Manifest lines are parsed, checked and turned into rows (all but the image: its mask
encoded as PNG, its near copies looked up) in worker processes (:mod:`daad.processes`), a chunk of
``daad.registry.manifest.CHUNK`` lines at a time; the parent gets the chunks back in line order, checks the ids'
order, reads each image and checks its sha256 (the bytes it stores are the bytes it
checked, and they never cross a pipe) and its header against the mask
(:func:`daad.images.image_size`), and writes the shards, so the bytes do not depend on the
number of workers. A line whose record ``daad validate`` would reject (unknown licence,
empty mask or one too large to draw, corrupt or truncated image, bomb, wrong size) is
rejected by name; the mask checks are made on its runs, before any pixel is allocated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from tqdm.auto import tqdm

from daad.dataset.build_rows import Pending, Prepared, prepare_chunk
from daad.dataset.card import registry_card
from daad.dataset.sheets import SAMPLES_PATH, build_samples
from daad.errors import DaadError, MaskMismatchError, PathEscapeError, RecordFileError, RootNotFoundError
from daad.registry.exclusion import FILENAME as RULES_FILE
from daad.registry.exclusion import HASHES_DIR
from daad.dataset.features import REGISTRY_FEATURES
from daad.images import image_cell, image_size, sha256_file
from daad.licences import LicencePolicy
from daad.registry.manifest import IdOrder, count_lines, line_chunks
from daad.processes import default_workers, process_map, start_server
from daad.registry.registry import Registry
from daad.dataset.shards import DatasetFolderWriter
from daad.dataset.summary import BuildSummary
from daad.taxonomy import Status
from daad.registry.validate import check_size

BUILD_FORMAT = 4
"""Bump when what a manifest line becomes changes, so that older shards are not reused."""


class BuildError(DaadError):
    """Some records could not be built; the previous output was left untouched."""

    def __init__(self, summary: BuildSummary) -> None:
        self.summary = summary
        lines = [f"{len(summary.errors)} record(s) rejected; previous output left untouched:"]
        lines += [f"  {e}" for e in summary.errors[:20]]
        if len(summary.errors) > 20:
            lines.append(f"  ... and {len(summary.errors) - 20} more")
        super().__init__("\n".join(lines))


class EmptyBuildError(DaadError):
    """The build would write no row: it fails, saying why, and the previous output stays."""

    def __init__(self, summary: BuildSummary, statuses: tuple[Status, ...]) -> None:
        self.summary = summary
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "none"
        wanted = ", ".join(str(s) for s in statuses)
        super().__init__(
            f"nothing to build: no record passes the licence policy {summary.licence_policy!r} and the statuses "
            f"({wanted}) (skipped: {skipped}); previous output left untouched. "
            f"See what there is with `daad stats --status all`; build with another policy, "
            f"e.g. `daad build --licence-policy all`"
        )


def build(
    registry: Registry,
    out: Path,
    *,
    origins: list[str] | None = None,
    licence_policy: LicencePolicy | None = None,
    statuses: tuple[Status, ...] = (Status.ACCEPTED,),
    progress: bool = True,
    workers: int | None = None,
    reuse: bool = False,
    weak_masks: bool = True,
) -> BuildSummary:
    """Build the registry into ``out`` with ``workers`` processes (default: one per CPU),
    keeping the shards of unchanged origins when ``reuse``; records whose mask is only a coarse
    region (``weak_mask``) are left out unless ``weak_masks``.

    Raises :class:`BuildError` on bad records and :class:`EmptyBuildError` when no row
    would be written (output untouched either way).
    """
    out = Path(out)
    workers = workers or default_workers()
    if workers > 1:
        start_server((prepare_chunk.__module__,))  # its imports overlap with hashing the inputs below
    policy = licence_policy or LicencePolicy.everything()
    summary = BuildSummary(licence_policy=policy.name)
    manifests = registry.manifests(origins)
    rules = _rules_digest(registry)
    digests = {p: sha256_file(p) for p in manifests}
    keys = {p: _origin_key(digests[p], rules, policy, statuses, weak_masks) for p in manifests}
    previous = _previous_reuse(out) if reuse else {}
    with DatasetFolderWriter(out, REGISTRY_FEATURES) as writer:
        entries: dict[str, dict] = {}
        todo = []
        for manifest in manifests:
            entry = previous.get(manifest.stem)
            if entry is not None and entry["key"] == keys[manifest] and _adopt(writer, out, entry["files"]):
                entries[manifest.stem] = entry
                summary.add(BuildSummary.from_json(entry["summary"]))
                summary.reused.append(manifest.stem)
            else:
                todo.append(manifest)
        bar = tqdm(total=sum(count_lines(p) for p in todo), unit="rec", desc="build", disable=not progress)
        if todo:
            registry.rules.near_duplicate_evaluations(())  # load the hash indices once, so each worker receives them loaded
            registry.licences
        chunks = process_map(prepare_chunk, (registry, policy, statuses, weak_masks), _chunks(todo), workers)
        built = [
            (manifest, *_write_origin(writer, registry, manifest, group, bar))
            for manifest, group in groupby(chunks, key=itemgetter(0))
        ]
        bar.close()
        writer.finish()
        for manifest, part, shards, pinned in built:
            summary.add(part)
            if pinned:
                files = {s: {"sha256": writer.sha256[s], "rows": writer.rows_written[s]} for s in sorted(shards)}
                entries[manifest.stem] = {"key": keys[manifest], "files": files, "summary": part.to_json()}
        if summary.errors:
            raise BuildError(summary)
        if not summary.accepted:
            raise EmptyBuildError(summary, statuses)
        files = sorted(writer.rows_written)
        writer.write_file(SAMPLES_PATH, build_samples(writer.tmp, writer.rows_written))
        writer.write_file("README.md", registry_card(registry, summary, files, samples=SAMPLES_PATH))
        build_info = summary.to_json() | {
            "manifests": {p.name: digests[p] for p in manifests},
            "licence_policy": policy.name,
            "reuse": dict(sorted(entries.items())),
        }
        writer.write_file("build.json", json.dumps(build_info, indent=2, sort_keys=True) + "\n")
        writer.commit()
    return summary


def _rules_digest(registry: Registry) -> str:
    """sha256 of the exclusion rules (as resolved from the catalogue, and their file) and every
    evaluation hashes file (they decide the dup shards)."""
    digest = hashlib.sha256()
    for name, rule in registry.rules.rules.items():
        digest.update(f"{name}\0{','.join(rule.origins)}\0{rule.near_duplicates}\0".encode())
    rules_dir = registry.manifests_dir
    for path in [rules_dir / RULES_FILE, *sorted((rules_dir / HASHES_DIR).glob("*"))]:
        if path.is_file():
            digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def _origin_key(
    manifest_sha256: str, rules: str, policy: LicencePolicy, statuses: tuple[Status, ...], weak_masks: bool
) -> str:
    """What an origin's shards are a function of, hashed."""
    inputs = {
        "format": BUILD_FORMAT,
        "manifest": manifest_sha256,
        "rules": rules,
        "policy": [policy.name, policy.allowed],
        "statuses": sorted(str(s) for s in statuses),
    } | ({} if weak_masks else {"weak_masks": False})
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _previous_reuse(out: Path) -> dict[str, dict]:
    """The per-origin reuse entries of the build in ``out`` (none when absent or unreadable)."""
    try:
        return json.loads((out / "build.json").read_text(encoding="utf-8")).get("reuse", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _adopt(writer: DatasetFolderWriter, out: Path, files: dict[str, dict]) -> bool:
    """Hard-link an origin's previous shards into the new build if every one is intact."""
    for relpath, info in files.items():
        path = out / relpath
        if not path.is_file() or sha256_file(path) != info["sha256"]:
            return False
    for relpath, info in files.items():
        writer.adopt(relpath, out / relpath, info["rows"], info["sha256"])
    return True


def _write_origin(
    writer: DatasetFolderWriter, registry: Registry, manifest: Path, chunks: Iterator[Prepared], bar
) -> tuple[BuildSummary, set[str], bool]:
    """Read the images of one manifest's prepared lines and write the rows into their shards
    (closed at the end); returns its summary, its shards, and whether every row's image is
    pinned by a sha256."""
    part = BuildSummary()
    shards: set[str] = set()
    pinned = True
    order = IdOrder(manifest)
    for _, lines in chunks:
        for lineno, record_id, outcome in lines:
            order.check(lineno, record_id)
            if isinstance(outcome, Pending):
                outcome = _complete(registry, record_id, outcome)
            if isinstance(outcome, str):
                part.skipped[outcome] += 1
            elif isinstance(outcome, DaadError):
                part.rejected[getattr(outcome, "reason", "error")] += 1
                part.errors.append(str(outcome))
            else:
                pending, data = outcome
                nbytes = len(data) + len(pending.row["mask"]["bytes"])
                writer.write(pending.shard, pending.row | {"image": image_cell(data, pending.image_name)}, nbytes)
                shards.add(pending.shard)
                pinned = pinned and pending.image.sha256 is not None
                part.accepted += 1
                part.image_bytes += nbytes
                part.counts[pending.counts_key] += 1
                part.origins[pending.origin] += 1
        bar.update(len(lines))
    for shard in sorted(shards):
        writer.close_shard(shard)
    return part, shards, pinned


def _chunks(manifests: list[Path]) -> Iterator[tuple[Path, list[tuple[int, str]]]]:
    """``(manifest, [(line number, line), ...])`` of every manifest, a chunk at a time."""
    for manifest in manifests:
        for chunk in line_chunks(manifest):
            yield manifest, chunk


def _complete(registry: Registry, record_id: str, pending: Pending) -> tuple[Pending, bytes] | DaadError:
    """The pending row with its image bytes, read and checked against the manifest's sha256,
    and its header against the mask (as :func:`daad.images.image_size` checks it); or the error."""
    try:
        path, data = registry.read_image_file(pending.origin, pending.image, record_id)
        size = image_size(data, record_id, path)
        check_size(record_id, path, (pending.row["width"], pending.row["height"]), size)
    except (RecordFileError, MaskMismatchError, PathEscapeError, RootNotFoundError) as exc:
        return exc
    return pending, data
