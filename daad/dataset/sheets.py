"""Grids of real anomalies for people: the sample grid a build embeds in its card, and a
contact sheet per anomaly class of the registry (``daad stats --contact-sheet DIR``).

Each tile is one record's image, fitted into a square with its aspect kept and its mask
outlined in red, labelled with its id; each grid row starts with a strip naming what it
holds. Records are spread across origins (round robin over the origins, evenly spaced
within each), so a grid never shows one source only. The drawing primitives are the
generators' preview ones (:mod:`daad.synthesis.preview`); the same input gives the same bytes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.images import decode_image, to_rgb_array
from daad.synthesis.preview import LABEL_HEIGHT, fit_cell, label_strip, outline, png_bytes
from daad.taxonomy import ANOMALY_CLASSES

CELL = 160
SAMPLES_PER_CLASS = 6
"""Tiles per class on a card's sample grid."""
SAMPLES_PATH = "images/samples.png"
"""Where a build keeps its sample grid (the card links it)."""
SHEET_COLUMNS = 8
SHEET_TILES = 48
"""Tiles on one class's contact sheet (at most)."""


@dataclass(frozen=True, slots=True)
class Tile:
    """One record to draw: RGB image, mask (non-zero = anomaly, same size) and its label."""

    image: np.ndarray
    mask: np.ndarray
    label: str


def spread(sizes: dict[str, int], wanted: int) -> dict[str, list[int]]:
    """Up to ``wanted`` indices over the groups of ``sizes`` (group -> items): groups take turns
    in sorted order, and each group's indices are evenly spaced over its items."""
    take: Counter = Counter()
    groups = sorted(g for g, n in sizes.items() if n > 0)
    while sum(take.values()) < wanted and any(take[g] < sizes[g] for g in groups):
        for g in groups:
            if take[g] < sizes[g] and sum(take.values()) < wanted:
                take[g] += 1
    return {g: sorted(set(np.linspace(0, sizes[g] - 1, k).round().astype(int).tolist())) for g, k in take.items()}


def grid(rows: Sequence[tuple[str, Sequence[Tile]]], columns: int, cell: int = CELL) -> np.ndarray:
    """One titled band per ``(title, tiles)``, ``columns`` tiles a line (grey where none)."""
    width = columns * cell
    blank = np.full((cell + LABEL_HEIGHT, cell, 3), 200, np.uint8)
    bands = []
    for title, tiles in rows:
        bands.append(label_strip(title, width))
        drawn = [_tile(t, cell) for t in tiles]
        for start in range(0, max(len(drawn), 1), columns):
            line = drawn[start : start + columns]
            bands.append(np.concatenate(line + [blank] * (columns - len(line)), axis=1))
    return np.concatenate(bands, axis=0) if bands else np.zeros((cell, width, 3), np.uint8)


def _tile(tile: Tile, cell: int) -> np.ndarray:
    image = fit_cell(tile.image, cell)
    mask = fit_cell(np.repeat((tile.mask > 0).astype(np.uint8)[..., None] * 255, 3, axis=2), cell, cv2.INTER_NEAREST)
    return np.concatenate([outline(image, mask[..., 0]), label_strip(tile.label, cell)], axis=0)


# --- the card's sample grid, from a build's shards ----------------------------------------


def build_samples(folder: Path, rows: dict[str, int], per_class: int = SAMPLES_PER_CLASS) -> bytes:
    """PNG bytes of the sample grid of the build in ``folder`` whose shards are ``rows``
    (``data/<origin>/<class>[...].parquet`` -> rows): one band per class present."""
    bands = []
    for cls in ANOMALY_CLASSES:
        shards = {s: n for s, n in rows.items() if PurePosixPath(s).stem.split("-", 1)[0] == cls}
        if not shards:
            continue
        tiles = [tile for shard, indices in sorted(spread(shards, per_class).items())
                 for tile in _shard_tiles(folder / shard, indices)]
        origins = len({PurePosixPath(s).parts[1] for s in shards})
        bands.append((f"{cls}: {sum(shards.values())} rows from {origins} origin(s)", tiles))
    return png_bytes(grid(bands, per_class))


def _shard_tiles(path: Path, indices: list[int]) -> Iterator[Tile]:
    """The rows ``indices`` of one shard as tiles, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    shard = pq.ParquetFile(path)
    start = 0
    for group in range(shard.num_row_groups):
        count = shard.metadata.row_group(group).num_rows
        inside = [i - start for i in indices if start <= i < start + count]
        if inside:
            table = shard.read_row_group(group, columns=["id", "image", "mask"]).take(inside)
            for row in table.to_pylist():
                yield Tile(_decode(row["image"]["bytes"], row["id"]), _decode(row["mask"]["bytes"], row["id"], True),
                           row["id"])
        start += count


def _decode(data: bytes, record_id: str, grey: bool = False) -> np.ndarray:
    image = decode_image(data, record_id)
    return np.asarray(image.convert("L")) if grey else to_rgb_array(image)


# --- contact sheets of the registry, one per class ----------------------------------------


@dataclass
class SheetReport:
    """What ``class_sheets`` drew: sheet per class, and records it could not read (reason -> count)."""

    sheets: dict[str, Path]
    unreadable: Counter


def class_sheets(registry, out: Path, status: str = "accepted", tiles: int = SHEET_TILES) -> SheetReport:
    """Write ``<out>/<class>.png`` for every class with records of ``status`` (``all``: any),
    near copies left out: up to ``tiles`` records spread across the origins whose images can be
    read here. Records whose image cannot be read (origin without a root, not fetched, bad file)
    are left out and counted by reason."""
    by_class: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in registry.records():
        if (status == "all" or record.status == status) and record.duplicate_of is None:
            by_class[record.anomaly_class][record.origin].append(record)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = SheetReport({}, Counter())
    for cls in (c for c in ANOMALY_CLASSES if c in by_class):
        total, found = sum(len(r) for r in by_class[cls].values()), len(by_class[cls])
        origins = {}
        for origin, records in by_class[cls].items():
            if records[0].image.path is not None and registry.roots.get(origin) is None:
                report.unreadable[f"no root for {origin}"] += len(records)
            else:
                origins[origin] = records
        drawn = []
        for origin, indices in sorted(spread({o: len(r) for o, r in origins.items()}, tiles).items()):
            for i in indices:
                tile = _record_tile(registry, origins[origin][i], report.unreadable)
                if tile is not None:
                    drawn.append(tile)
        title = f"{cls}: {len(drawn)} of {total} records, from {len(origins)} of {found} origin(s) ({status})"
        path = out / f"{cls}.png"
        write_atomically(path, [png_bytes(grid([(title, drawn)], SHEET_COLUMNS))])
        report.sheets[cls] = path
    return report


def _record_tile(registry, record, unreadable: Counter) -> Tile | None:
    """A record's tile, or ``None`` (counted in ``unreadable`` by reason) when its image cannot be read."""
    try:
        path, data = registry.read_image_file(record.origin, record.image, record.id)
        image = to_rgb_array(decode_image(data, record.id, path))
    except DaadError as exc:
        unreadable[getattr(exc, "reason", type(exc).__name__)] += 1
        return None
    return Tile(image, record.mask.decode(), record.id)
