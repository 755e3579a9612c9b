"""The dataset every generator writes: shards in the registry's layout plus a card.

Columns: ``id``, ``image`` (PNG), ``mask`` (0/255 PNG), ``anomaly_class``, ``generator``,
``target_id``, ``source_ids`` (the real anomalies used, for ``daad audit``), ``seed``
and ``details`` (JSON of the row's generator facts). The card records the generator's
parameters, the evaluation dataset the output is leak-free for, and the licences the
output inherits from the real anomalies and target images it used.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import datasets
import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from daad.licences import UNKNOWN
from daad.masks import encode_png
from daad.images import image_cell
from daad.dataset.shards import DatasetFolderWriter, card_text, features_yaml
from daad.synthesis.base import Synthesis
from daad.taxonomy import ANOMALY_CLASSES

GENERATED_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "mask": datasets.Image(),
        "anomaly_class": datasets.ClassLabel(names=list(ANOMALY_CLASSES)),
        "generator": datasets.Value("string"),
        "target_id": datasets.Value("string"),
        "source_ids": datasets.List(datasets.Value("string")),
        "seed": datasets.Value("int64"),
        "details": datasets.Value("string"),
    }
)
ROWS_PER_SHARD = 1000
PARAMS_FILE = "generator.json"


@dataclass
class GeneratedSummary:
    rows: int = 0
    classes: Counter = field(default_factory=Counter)
    licences: Counter = field(default_factory=Counter)
    """Licence -> rows whose inputs carry it."""
    sources_used: set[str] = field(default_factory=set)

    def count(self, anomaly_class: str | None, target_id: str, source_ids: Iterable[str], licences: Mapping[str, str]) -> None:
        """Count one row (``licences``: licence by input id; unknown ids count as ``unknown``)."""
        self.rows += 1
        self.classes[anomaly_class or "none"] += 1
        self.sources_used.update(source_ids)
        for lic in sorted({licences.get(i, UNKNOWN) for i in (target_id, *source_ids)}):
            self.licences[lic] += 1


@dataclass(frozen=True, slots=True)
class EncodedRow:
    """A :class:`Synthesis` with its image and mask encoded as PNG (what worker processes send back)."""

    image_png: bytes
    mask_png: bytes
    anomaly_class: str | None
    target_id: str
    source_ids: tuple[str, ...]
    details: dict[str, Any]

    def decode(self) -> Synthesis:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(self.image_png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imdecode(np.frombuffer(self.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        return Synthesis(image, mask, self.anomaly_class, self.target_id, self.source_ids, self.details)


def encode_row(row: Synthesis | EncodedRow) -> EncodedRow:
    """``row`` with its image and mask as PNG bytes (lossless, deterministic)."""
    if isinstance(row, EncodedRow):
        return row
    return EncodedRow(
        encode_image_png(row.image), encode_png(row.mask), row.anomaly_class, row.target_id,
        tuple(row.source_ids), row.details,
    )


def encode_image_png(image: np.ndarray) -> bytes:
    """RGB (or grey) ``uint8`` array as a lossless PNG, deterministic."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("could not encode image as PNG")
    return buf.tobytes()


def write_generated(
    out: Path,
    rows: Iterable[Synthesis | EncodedRow],
    *,
    generator: str,
    params: Mapping[str, Any],
    seed: int,
    evaluation: str,
    input_licences: Mapping[str, str] | None = None,
    progress: bool = True,
    total: int | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> GeneratedSummary:
    """Write ``rows`` as a dataset folder at ``out`` (atomically) and return its summary.

    ``input_licences`` maps the ids of source records and target images to their
    licence; ids it does not know count as ``unknown``.
    """
    licences = input_licences or {}
    summary = GeneratedSummary()
    with DatasetFolderWriter(out, GENERATED_FEATURES) as writer:
        for index, raw in enumerate(tqdm(rows, total=total, desc=generator, unit="img", disable=not progress)):
            row = encode_row(raw)
            write_row(writer, index, row, generator=generator, seed=seed, rows_per_shard=rows_per_shard)
            if (index + 1) % rows_per_shard == 0:
                writer.close_shard(shard_name(index, rows_per_shard))
            summary.count(row.anomaly_class, row.target_id, row.source_ids, licences)
        finish_generated(writer, summary, generator=generator, params=params, seed=seed, evaluation=evaluation)
    return summary


def shard_name(index: int, rows_per_shard: int = ROWS_PER_SHARD) -> str:
    """The shard that row ``index`` of a generated dataset goes to."""
    return f"data/train-{index // rows_per_shard:05d}.parquet"


def write_row(
    writer: DatasetFolderWriter, index: int, row: EncodedRow, *, generator: str, seed: int, rows_per_shard: int
) -> None:
    """Row ``index`` of a generated dataset into its shard (the same cells wherever it is written)."""
    writer.write(
        shard_name(index, rows_per_shard),
        {
            "id": f"{generator}/{index:07d}",
            "image": image_cell(row.image_png, f"{index:07d}.png"),
            "mask": image_cell(row.mask_png, f"{index:07d}_mask.png"),
            "anomaly_class": ANOMALY_CLASSES.index(row.anomaly_class) if row.anomaly_class else None,
            "generator": generator,
            "target_id": row.target_id,
            "source_ids": list(row.source_ids),
            "seed": seed,
            "details": json.dumps(row.details, sort_keys=True, default=_jsonable),
        },
        len(row.image_png) + len(row.mask_png),
    )


def finish_generated(
    writer: DatasetFolderWriter, summary: GeneratedSummary, *, generator: str, params: Mapping[str, Any],
    seed: int, evaluation: str,
) -> None:
    """Write the parameters file and the card of a generated dataset, and commit it."""
    files = sorted(writer.rows_written)
    info = {
        "generator": generator,
        "params": dict(params),
        "seed": seed,
        "evaluation": evaluation,
        "rows": summary.rows,
        "classes": dict(sorted(summary.classes.items())),
        "licences": dict(sorted(summary.licences.items())),
    }
    writer.write_file(PARAMS_FILE, json.dumps(info, indent=2, sort_keys=True, default=_jsonable) + "\n")
    writer.write_file("README.md", _card(info, files))
    writer.commit()


def read_generated(path: Path, targets: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a generated dataset folder, with ``image`` (RGB) and ``mask`` (0/1) as arrays;
    only those made from ``targets`` when given (the others are never decoded).

    Reads the shards directly (streaming, no ``datasets`` cache: that cache is keyed by the
    folder's name, so two outputs both called ``out`` could otherwise be confused).
    """
    for shard in sorted((Path(path) / "data").glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=64):
            for raw in batch.to_pylist():
                if targets is None or raw["target_id"] in targets:
                    yield decode_generated(raw)


def decode_generated(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One stored row of a generated dataset, with ``image`` (RGB) and ``mask`` (0/1) as arrays,
    its class by name and its details parsed."""
    row = GENERATED_FEATURES.decode_example(raw)
    return row | {
        "image": np.asarray(row["image"].convert("RGB")),
        "mask": (np.asarray(row["mask"].convert("L")) > 127).astype(np.uint8),
        "anomaly_class": ANOMALY_CLASSES[row["anomaly_class"]] if row["anomaly_class"] is not None else None,
        "details": json.loads(row["details"]),
    }


def generator_info(path: Path) -> dict[str, Any]:
    """The generator, parameters, seed and evaluation target recorded with a generated dataset."""
    return json.loads((Path(path) / PARAMS_FILE).read_text(encoding="utf-8"))


def _card(info: dict[str, Any], files: list[str]) -> str:
    front = {
        "license": "other",
        "tags": ["anomaly-detection", "synthetic", info["generator"]],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": files}]}],
        "dataset_info": [{"config_name": "default", "features": features_yaml(GENERATED_FEATURES)}],
    }
    restrictive = [lic for lic in info["licences"] if lic == UNKNOWN or "NC" in lic or "SA" in lic or lic.startswith("LicenseRef-")]
    lines = [
        f"# Pseudo-anomalies from `{info['generator']}`",
        "",
        f"{info['rows']} rows, seed {info['seed']}, leak-free for evaluation on `{info['evaluation']}`.",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(info["params"], indent=2, sort_keys=True, default=_jsonable),
        "```",
        "",
        "## Classes",
        "",
        "| class | rows |",
        "|---|---|",
        *[f"| {c} | {n} |" for c, n in info["classes"].items()],
        "",
        "## Inherited licences",
        "",
        "Each row inherits the licences of the real anomalies and the target image it was made from.",
        "",
        "| licence | rows |",
        "|---|---|",
        *[f"| {lic} | {n} |" for lic, n in info["licences"].items()],
    ]
    if restrictive:
        lines += [
            "",
            f"**Restricted:** rows carry {', '.join(f'`{x}`' for x in restrictive)}: non-commercial, "
            "share-alike, custom or unknown terms apply to those rows; check them before redistribution.",
        ]
    return card_text(front, "\n".join(lines))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
