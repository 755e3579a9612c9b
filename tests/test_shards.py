"""The shard writer and the mask PNGs it stores: same rows, same bytes; masks read as 0/255 everywhere."""

from __future__ import annotations

import hashlib
import io

import cv2
import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from daad.masks import RLE, encode_png
from daad.dataset.shards import DatasetFolderWriter

FEATURES = datasets.Features({"id": datasets.Value("string"), "payload": datasets.Value("binary")})
ROWS = [{"id": f"r{i:04d}", "payload": bytes([i % 251]) * (100 + i)} for i in range(300)]


def _write(out, rows, **kwargs) -> bytes:
    with DatasetFolderWriter(out, FEATURES, **kwargs) as writer:
        for row in rows:
            writer.write("data/a.parquet", row, len(row["payload"]))
        writer.commit()
    return (out / "data" / "a.parquet").read_bytes()


def test_same_rows_same_bytes_in_whole_row_groups(tmp_path):
    first = _write(tmp_path / "one", ROWS)
    assert _write(tmp_path / "two", ROWS) == first
    with DatasetFolderWriter(tmp_path / "three", FEATURES) as writer:
        for row in ROWS:
            writer.write("data/a.parquet", row)
        writer.finish()
        assert writer.sha256 == {"data/a.parquet": hashlib.sha256(first).hexdigest()}  # hashed as written
        writer.commit()
    meta = pq.ParquetFile(tmp_path / "one" / "data" / "a.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [128, 128, 44]
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "one" / "data" / "a.parquet"), split="train")
    assert ds["id"] == [r["id"] for r in ROWS] and ds[299]["payload"] == ROWS[299]["payload"]


def test_the_byte_budget_bounds_what_is_buffered(tmp_path):
    out = tmp_path / "out"
    budget = 5_000
    with DatasetFolderWriter(out, FEATURES, buffer_bytes=budget) as writer:
        for i, row in enumerate(ROWS):
            writer.write(f"data/{'ab'[i % 2]}.parquet", row, len(row["payload"]))
            assert sum(writer._buffer_sizes.values()) <= budget
        writer.commit()
    for name, parity in (("a", 0), ("b", 1)):
        path = out / "data" / f"{name}.parquet"
        assert pq.read_table(path)["id"].to_pylist() == [r["id"] for r in ROWS[parity::2]]
        assert max(rg["num_rows"] for rg in pq.ParquetFile(path).metadata.to_dict()["row_groups"]) < 128


def test_a_failed_background_write_surfaces_and_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _write(out, ROWS)

    def full_disk(self, table, row_group_size=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _write(out, ROWS)
    assert (out / "data" / "a.parquet").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary folder is gone


@pytest.mark.parametrize("bits", [2, 8])
def test_mask_pngs_decode_to_0_and_255_in_pil_opencv_and_datasets(bits, tmp_path):
    rng = np.random.default_rng(bits)
    masks = [rng.integers(0, 2, (h, w)) for h, w in ((1, 1), (3, 5), (7, 9), (4, 8), (13, 250))]
    masks += [np.asfortranarray(masks[-1]), masks[2].astype(bool), masks[3] * 255]
    for mask in masks:
        data = encode_png(mask, bits=bits)
        expected = np.where(mask != 0, 255, 0)
        image = Image.open(io.BytesIO(data))
        assert image.mode == "L" and image.size == (mask.shape[1], mask.shape[0])
        assert (np.asarray(image) == expected).all()
        assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) == expected).all()
        assert encode_png(mask, bits=bits) == data
    with pytest.raises(ValueError, match="bits"):
        encode_png(masks[0], bits=1)


def _full_columns(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[:, 1 : w - 1] = 1  # one run through whole columns
    mask[h // 2, 0] = 1  # a run of one pixel
    return mask


@pytest.mark.parametrize(
    "mask",
    [
        np.ones((1, 1), np.uint8),
        np.zeros((3, 5), np.uint8),
        np.ones((7, 9), np.uint8),
        _full_columns(5, 11),
        _full_columns(1, 6),
        np.eye(6, 13, dtype=np.uint8),
        *(np.random.default_rng(seed).random((h, w)) < p for seed, (h, w, p) in enumerate([(13, 250, 0.1), (40, 7, 0.5), (9, 64, 0.95)])),
    ],
    ids=lambda m: f"{m.shape[0]}x{m.shape[1]}-{int(m.sum())}",
)
def test_rle_pngs_made_from_runs_decode_to_the_mask(mask):
    for rle in (RLE.encode(mask), RLE.from_json(RLE.encode(mask).to_json())):  # runs decoded now, or kept from parsing
        data = rle.png()
        expected = np.where(mask != 0, 255, 0)
        image = Image.open(io.BytesIO(data))
        assert image.mode == "L" and (np.asarray(image) == expected).all()
        assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) == expected).all()
        feature = datasets.Image()
        decoded = feature.decode_example(feature.encode_example({"bytes": data, "path": None}))
        assert (np.asarray(decoded) == expected).all()
