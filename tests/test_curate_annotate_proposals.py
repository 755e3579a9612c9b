"""SAM proposals for ``daad curate annotate`` on their own: a tiny random SAM saved to disk
(`helpers.tiny_sam`) loaded the way a ``facebook/sam-vit-base`` snapshot is, its mask for a
box or a click on a real CrackForest image, the refusal of folders that hold no usable SAM,
and the prompts file's checks. The round trip through Label Studio is in
``test_curate_annotate.py``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SHARED_DATA
from daad.curate.proposals import Prompt, PromptsError, ProposalModelError, SamProposer, prompt_for, read_prompts
from daad.registry.manifest import read_manifest
from helpers.tiny_sam import build_tiny_sam, sam_mask

IMAGE = SHARED_DATA / "crackforest" / "image" / "001.jpg"


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return build_tiny_sam(tmp_path_factory.mktemp("sam"))


def test_a_box_or_a_click_gives_sams_mask_of_the_image_size(tiny_sam):
    image = np.asarray(Image.open(IMAGE).convert("RGB"))
    proposer = SamProposer.load(tiny_sam)
    box = proposer.mask(image, Prompt(box=(40, 30, 120, 90)))
    assert box.shape == image.shape[:2] and box.dtype == bool and 0 < box.sum() < box.size
    np.testing.assert_array_equal(box, sam_mask(tiny_sam, image, box=[40, 30, 120, 90]))
    np.testing.assert_array_equal(box, proposer.mask(image, Prompt(box=(40, 30, 120, 90))))  # deterministic
    np.testing.assert_array_equal(SamProposer.load(tiny_sam).mask(image, Prompt(box=(40, 30, 120, 90))), box)
    other = proposer.mask(image, Prompt(box=(300, 200, 150, 100)))
    assert not np.array_equal(other, box)  # the prompt matters
    click = proposer.mask(image, Prompt(point=(200, 150)))
    assert click.shape == image.shape[:2]
    np.testing.assert_array_equal(click, sam_mask(tiny_sam, image, point=[200, 150]))


def test_a_folder_without_a_usable_sam_is_refused(tiny_sam, tmp_path):
    with pytest.raises(ProposalModelError, match="is not a folder"):
        SamProposer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProposalModelError, match="cannot be loaded"):
        SamProposer.load(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ProposalModelError, match="'bert' model, not SAM"):
        SamProposer.load(tmp_path / "bert")
    from safetensors.torch import load_file, save_file

    for case in ("truncated", "missing_weights", "no_processor"):
        folder = build_tiny_sam(tmp_path / case)
        weights = folder / "model.safetensors"
        if case == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        elif case == "missing_weights":
            tensors = load_file(weights)
            dropped = sorted(k for k in tensors if "mask_decoder" in k)[0]
            save_file({k: v for k, v in tensors.items() if k != dropped}, weights, metadata={"format": "pt"})
        else:
            (folder / "processor_config.json").unlink()
        with pytest.raises(ProposalModelError, match="missing or of the wrong shape" if case == "missing_weights"
                           else "cannot be loaded") as info:
            SamProposer.load(folder)
        assert str(folder) in str(info.value) and "never downloads" in str(info.value)


def _records():
    records = [r for r in read_manifest(REPO / "manifests" / "sd_saliency_900.jsonl")][:2]
    return {r.id: r for r in records} | {"x/unsized": replace(records[0], id="x/unsized", width=None, height=None)}


def test_prompts_file_is_read_and_checked(tmp_path):
    records = _records()
    first, second = list(records)[:2]
    width, height = records[first].width, records[first].height
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"id": first, "box": [1, 2, width - 1, height - 2]}) + "\n\n"
                    + json.dumps({"id": second, "point": [3.5, 4]}) + "\n"
                    + json.dumps({"id": "x/unsized", "box": [5000, 5000, 10, 10]}) + "\n")
    prompts = read_prompts(path, records)
    assert prompts == {first: Prompt(box=(1, 2, width - 1, height - 2)), second: Prompt(point=(3.5, 4)),
                       "x/unsized": Prompt(box=(5000, 5000, 10, 10))}
    bad = [
        ({"id": "sd_saliency_900/no-such"}, "unknown record id"),
        ({"id": first, "box": [1, 2, 3]}, "box must be 4 finite numbers"),
        ({"id": first, "point": [1, True]}, "point must be 2 finite numbers"),
        ({"id": first, "box": [0, 0, 0, 5]}, "empty size"),
        ({"id": first, "box": [1, 1, width, 5]}, f"outside the {width}x{height} image"),
        ({"id": first, "point": [width, 0]}, "outside"),
        ({"id": first, "box": [0, 0, 5, 5], "point": [1, 1]}, "one of box, point"),
        ({"id": first, "bbox": [0, 0, 5, 5]}, "one of box, point"),
        ([first], "expected an object"),
    ]
    path.write_text("\n".join(json.dumps(line) for line, _ in bad) + "\nnot json\n"
                    + json.dumps({"id": second, "point": [1, 1]}) + "\n" + json.dumps({"id": second, "point": [2, 2]}))
    with pytest.raises(PromptsError) as info:
        read_prompts(path, records)
    problems = info.value.problems
    assert [n for n, _ in problems] == list(range(1, len(bad) + 2)) + [len(bad) + 3]
    for (_, expected), (_, reason) in zip(bad, problems):
        assert expected in reason, reason
    assert "not JSON" in problems[len(bad)][1] and "a second prompt" in problems[-1][1]
    assert str(path) in str(info.value) and "nothing was sent" in str(info.value)
    with pytest.raises(PromptsError, match="cannot read the file"):
        read_prompts(tmp_path / "none.jsonl", records)


def test_a_records_prompt_is_the_files_else_its_box():
    records = _records()
    record = next(iter(records.values()))
    assert record.bbox is not None
    assert prompt_for(record, {}) == Prompt(box=tuple(record.bbox))
    assert prompt_for(record, {record.id: Prompt(point=(1, 2))}) == Prompt(point=(1, 2))
    assert prompt_for(replace(record, bbox=None), {}) is None
