"""Target foregrounds: rembg's U²-Net path with a tiny ONNX model built here, and the
classical fallback on real images (textures -> all ones, an object on a background -> its shape)."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import SHARED_DATA
from daad.synthesis.foreground import ForegroundError, ForegroundExtractor, classical_mask
from daad.synthesis.targets import resize


@pytest.fixture(scope="module")
def tiny_u2net(tmp_path_factory):
    """Same signature as rembg's u2net.onnx: 1x3x320x320 float in, 1x1x320x320 (first output) out.

    The "saliency" is the mean of the normalised channels, so bright regions are foreground.
    """
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])
    d0 = helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])
    node = helper.make_node("ReduceMean", ["input.1"], ["d0"], axes=[1], keepdims=1)
    model = helper.make_model(helper.make_graph([node], "tiny_u2net", [x], [d0]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("rembg") / "tiny_u2net.onnx"
    onnx.save(model, path)
    return path


def object_on_background():
    """A real KolektorSDD texture disc on a dark background: an object, like MVTec's."""
    texture = resize(cv2.cvtColor(cv2.imread(str(SHARED_DATA / "kolektorsdd-yolo/Datasets/images/train/000.jpg")), cv2.COLOR_BGR2RGB), 256)
    disc = np.zeros((256, 256), np.uint8)
    cv2.circle(disc, (140, 120), 80, 1, -1)
    image = np.full_like(texture, 20)
    image[disc == 1] = texture[disc == 1]
    return image, disc


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_rembg_path_runs_the_local_model_through_rembg(tiny_u2net, monkeypatch):
    image, disc = object_on_background()
    fg = ForegroundExtractor("rembg", tiny_u2net)
    assert fg.method == "rembg"
    mask = fg("t/1", image)
    assert mask.shape == disc.shape and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert iou(mask, disc) > 0.95
    assert fg("t/1", np.zeros_like(image)) is mask  # cached per target id
    monkeypatch.setenv("DAAD_REMBG_MODEL", str(tiny_u2net))
    auto = ForegroundExtractor("auto")
    assert auto.method == "rembg" and np.array_equal(auto("t/1", image), mask)


def test_rembg_needs_a_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DAAD_REMBG_MODEL", raising=False)
    with pytest.raises(ForegroundError, match="DAAD_REMBG_MODEL"):
        ForegroundExtractor("rembg")
    with pytest.raises(ForegroundError, match="does not exist"):
        ForegroundExtractor("rembg", tmp_path / "missing.onnx")
    assert ForegroundExtractor("auto").method == "classical"


def test_classical_fallback_finds_an_object(tmp_path):
    image, disc = object_on_background()
    assert iou(classical_mask(image), disc) > 0.95
    inverted = 255 - image  # bright background, dark object: polarity chosen by the border
    assert iou(classical_mask(inverted), disc) > 0.95


@pytest.mark.parametrize("pattern", [
    "kolektorsdd-yolo/Datasets/images/train/00*.jpg",
    "sd-saliency-900/Source Images/Sc_1*.bmp",
    "crackforest/image/00*.jpg",
])
def test_classical_fallback_takes_real_textures_for_textures(pattern):
    paths = sorted(glob.glob(str(SHARED_DATA / pattern)))[:5]
    assert len(paths) == 5
    for path in paths:
        image = resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), 256)
        assert classical_mask(image).all(), path


def test_full_mask_for_textures():
    image, _ = object_on_background()
    assert ForegroundExtractor("full")("t", image).all()
    with pytest.raises(ValueError, match="foreground method"):
        ForegroundExtractor("magic")
