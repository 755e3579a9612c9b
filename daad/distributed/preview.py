"""The contact sheet of an output written on Ray: its rows never passed through the driver,
so the rows :class:`~daad.synthesis.preview.PreviewSampler` chooses are read back from the
shards (the class column of every row, the pixels of the chosen rows only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from daad.synthesis.base import Synthesis
from daad.synthesis.output import ROWS_PER_SHARD, decode_generated, shard_name
from daad.synthesis.preview import PreviewSampler, contact_sheet
from daad.synthesis.targets import TargetFiles
from daad.taxonomy import ANOMALY_CLASSES


def preview_written(out: Path, targets: TargetFiles, rows: int, sheet: Path) -> Path:
    """Write the contact sheet of ``rows`` sampled rows of the generated dataset ``out``."""
    out = Path(out)
    classes = [
        c for shard in sorted((out / "data").glob("*.parquet"))
        for c in pq.read_table(shard, columns=["anomaly_class"]).column(0).to_pylist()
    ]
    sampler = PreviewSampler(rows, len(classes))
    for index, c in enumerate(classes):
        sampler.offer(_WrittenRow(out, index, ANOMALY_CLASSES[c] if c is not None else None))
    position = {target_id: i for i, target_id in enumerate(targets.ids)}
    shown = {row.target_id: targets[position[row.target_id]] for row in sampler.kept}
    return contact_sheet(sampler.kept, shown, sheet)


@dataclass(frozen=True)
class _WrittenRow:
    out: Path
    index: int
    anomaly_class: str | None

    def decode(self) -> Synthesis:
        """The row, read from the row group of its shard that holds it."""
        shard = pq.ParquetFile(self.out / shard_name(self.index))
        offset = self.index % ROWS_PER_SHARD
        group = 0
        while offset >= (rows := shard.metadata.row_group(group).num_rows):
            offset, group = offset - rows, group + 1
        row = decode_generated(shard.read_row_group(group).slice(offset, 1).to_pylist()[0])
        return Synthesis(
            row["image"], row["mask"], row["anomaly_class"], row["target_id"], tuple(row["source_ids"]), row["details"]
        )
