"""Small fake copies of published dataset layouts, one writer per layout.

Each writer reproduces the release's folder names, file naming, image formats and mask
conventions (VisA's small-integer masks, LOCO's several masks per image, DAGM's weak
ellipses and ``Labels.txt``, KolektorSDD's ``_label.bmp`` ...) with tiny images, and
returns what a loader must find in it. Every pixel comes from a seeded generator.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SIZE = 32


@dataclass
class Expected:
    """What a fake tree holds: anomalous records by native label, normals, skipped by reason."""

    records: dict[str, int] = field(default_factory=dict)
    normals: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.records.values())


def _image(path: Path, seed: int, *, mode: str = "RGB", size: tuple[int, int] = (SIZE, SIZE)) -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def blob(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A 0/1 mask with one filled rectangle placed by ``seed``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size[1], size[0]), np.uint8)
    y, x = rng.integers(2, size[1] // 2), rng.integers(2, size[0] // 2)
    mask[y : y + 6, x : x + 8] = 1
    return mask


def _mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * value).astype(np.uint8), "L").save(path)


def write_mtd(root: Path) -> Expected:
    """``MT_<Type>/Imgs/<name>.jpg`` + same-name anti-aliased ``.png``; ``MT_Free`` normals (with empty masks);
    an all-black mask in a defect folder (MTD has four, all Uneven)."""
    seed = 0
    for kind, n in (("Blowhole", 2), ("Break", 1), ("Crack", 1), ("Fray", 1), ("Uneven", 1)):
        for i in range(n):
            seed += 1
            name = f"exp{i}_num_{seed}"
            _image(root / f"MT_{kind}" / "Imgs" / f"{name}.jpg", seed, mode="L")
            _mask(root / f"MT_{kind}" / "Imgs" / f"{name}.png", antialiased(seed), value=1)
    _image(root / "MT_Crack" / "Imgs" / "exp9_num_99.jpg", 99, mode="L")  # its mask is missing
    _image(root / "MT_Uneven" / "Imgs" / "exp4_num_98.jpg", 98, mode="L")
    _mask(root / "MT_Uneven" / "Imgs" / "exp4_num_98.png", np.zeros((SIZE, SIZE), np.uint8))  # all black
    for i in range(3):
        _image(root / "MT_Free" / "Imgs" / f"exp0_num_{100 + i}.jpg", 100 + i, mode="L")
        _mask(root / "MT_Free" / "Imgs" / f"exp0_num_{100 + i}.png", np.zeros((SIZE, SIZE), np.uint8))
    (root / "README.md").write_text("This is the datasets of the paper ...\n")
    return Expected({"Blowhole": 2, "Break": 1, "Crack": 1, "Fray": 1, "Uneven": 1}, 3,
                    {"no_annotation": 1, "empty_mask": 1})


def antialiased(seed: int) -> np.ndarray:
    """A 0..255 mask like MTD's: a 255 core with a ring of 128 and a ring of 127 around it."""
    core = blob(seed)
    ring = cv2.dilate(core, np.ones((3, 3), np.uint8))
    outer = cv2.dilate(ring, np.ones((3, 3), np.uint8))
    return np.where(core == 1, 255, np.where(ring == 1, 128, np.where(outer == 1, 127, 0))).astype(np.uint8)


def write_deepcrack(root: Path) -> Expected:
    """``{train,test}_img/<name>.jpg`` + ``{train,test}_lab/<name>.png`` (0/255), a portrait test image, README."""
    names = {"train": ("11111", "11112", "7Q3A9060-1"), "test": ("11125-1", "IMG_6544-2")}
    for split, stems in names.items():
        for i, stem in enumerate(stems):
            seed = 1100 + 10 * (split == "test") + i
            size = (SIZE, SIZE + 8) if stem == "IMG_6544-2" else (SIZE + 8, SIZE)  # 384x544 among 544x384
            _image(root / f"{split}_img" / f"{stem}.jpg", seed, size=size)
            _mask(root / f"{split}_lab" / f"{stem}.png", blob(seed, size))
    (root / "README.md").write_text("## Crack Detection Dataset\n")
    return Expected({"crack": 5})


CRACK500_NAMES = {"train": ("20160222_081011_1281_721", "20160222_081011_1_361", "20160302_155914_361_641"),
                  "val": ("20160222_081011_641_1", "IMG_2937_649_485")}
"""Crops named ``<photo>_<x>_<y>``; one portrait (360x640 among 640x360), one of a 648x484 camera's photos."""


def write_crack500(root: Path) -> Expected:
    """guoguolord/CrackDataset's ``crack500/``: ``train/`` + ``label/`` and ``val/`` + ``val_label/``, 1-bit PNG
    masks; a ``label/`` file named like a ``val/`` image (which must not be read for it); the repository's other
    folders (``CFD/``, ``AsphaltCrack300/``) are beside it, outside this root."""
    for split, masks in (("train", "label"), ("val", "val_label")):
        for i, stem in enumerate(CRACK500_NAMES[split]):
            seed = 1500 + 10 * (split == "val") + i
            size = (SIZE, SIZE + 8) if stem == "20160302_155914_361_641" else (SIZE + 8, SIZE)
            _image(root / split / f"{stem}.jpg", seed, size=size)
            (root / masks).mkdir(parents=True, exist_ok=True)
            Image.fromarray(blob(seed, size).astype(bool)).save(root / masks / f"{stem}.png")
    Image.fromarray(np.ones((SIZE, SIZE + 8), bool)).save(root / "label" / f"{CRACK500_NAMES['val'][0]}.png")
    return Expected({"crack": 5})


def write_asphaltcrack300(root: Path) -> Expected:
    """``AsphaltCrack300/``: ``train/NNN_KK.jpg`` tiles + ``label/NNN_KK.png`` palette masks whose index 0, drawn
    white, is the crack and index 1, drawn black, the road (the index alone would read inverted)."""
    for i, stem in enumerate(("001_04", "001_05", "002_04")):
        _image(root / "train" / f"{stem}.jpg", 1600 + i, size=(SIZE, SIZE + 8))
        mask = Image.fromarray((1 - blob(1600 + i, (SIZE, SIZE + 8))).astype(np.uint8), "P")
        mask.putpalette([255, 255, 255, 0, 0, 0])
        (root / "label").mkdir(parents=True, exist_ok=True)
        mask.save(root / "label" / f"{stem}.png")
    return Expected({"crack": 3})


def write_bsdata(root: Path) -> Expected:
    """``data/<name>.jpg``; ``label/<name>.json`` (LabelMe 4.5.6, ``Pitting`` polygons, ``imageData`` inline) for
    the pitted ones; the rest are normals; a stray copy in ``data/BSD/test/``; ``image_data.json``."""
    stems = [f"01_2009{i:02d}0523{i:02d}21_585000_090_crop_{1 + i % 2}" for i in range(5)]
    images = []
    for i, stem in enumerate(stems):
        size = (SIZE + 16, SIZE) if i % 2 else (SIZE + 24, SIZE)
        _image(root / "data" / f"{stem}.jpg", 1200 + i, size=size)
        annotation = None
        if i < 2:  # pitted: one polygon, then two
            polygons = [[[3.5, 4.2], [12.8, 3.9], [11.1, 12.6], [4.4, 10.0]]]
            if i == 1:
                polygons.append([[20, 20], [28, 21], [24, 28]])
            annotation = f"{stem}.json"
            (root / "label").mkdir(parents=True, exist_ok=True)
            (root / "label" / annotation).write_text(json.dumps({
                "version": "4.5.6", "flags": {}, "imagePath": f"{stem}.jpg", "imageData": "/9j/4AAQSkZJRg==",
                "imageHeight": size[1], "imageWidth": size[0],
                "shapes": [{"label": "Pitting", "points": p, "group_id": None, "shape_type": "polygon", "flags": {}}
                           for p in polygons],
            }, indent=2))
        images.append({"filename": f"{stem}.jpg", "train_test_split": "train" if annotation else None,
                       "type": 2, "wear_dev": [], "annotations": annotation})
    (root / "data" / "BSD" / "test").mkdir(parents=True)
    (root / "data" / "BSD" / "test" / f"{stems[0]}.jpg").write_bytes((root / "data" / f"{stems[0]}.jpg").read_bytes())
    (root / "image_data.json").write_text(json.dumps({"images": images}, indent=4))
    return Expected({"Pitting": 2}, 3)



def write_cracks_potholes(root: Path) -> Expected:
    """``Dataset/<name>/<name>_RAW.jpg`` with three RGB 0/255 masks beside it (``_CRACK``, ``_POTHOLE``, ``_LANE``),
    one of the two defect masks often all black: a crack, a pothole, both, neither (reported as empty); the
    repository's preview copy, figures and LICENSE outside ``Dataset/``."""
    names = ["1007599_RS_386_386RS289112_28920", "1008367_RS_386_386RS289112_32760",
             "1097248_DF_070_070BDF0010_04158", "917232_RS_290_290RS294095_19613"]
    present = [("CRACK",), ("POTHOLE",), ("CRACK", "POTHOLE"), ()]
    size = (SIZE + 8, SIZE)  # 1024x640 landscape
    for i, (name, labels) in enumerate(zip(names, present)):
        folder = root / "Dataset" / name
        _image(folder / f"{name}_RAW.jpg", 1500 + i, size=size)
        for k, label in enumerate(("CRACK", "POTHOLE", "LANE")):
            drawn = label in labels or label == "LANE"
            mask = blob(1500 + 10 * i + k, size) if drawn else np.zeros((size[1], size[0]), np.uint8)
            Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8), "RGB").save(
                folder / f"{name}_{label}.png")
    _image(root / "PreviewImages" / f"{names[2]}_RAW.jpg", 1502, size=size)
    _mask(root / "figures" / "5.png", blob(1599))
    (root / "LICENSE").write_text("MIT License\n\nCopyright (c) 2020 Bianka Passos\n")
    return Expected({"CRACK": 2, "POTHOLE": 2}, 0, {"empty_mask": 1})

def _mvtec_like(root: Path, layout: dict[str, dict[str, int]], normals: int) -> Expected:
    expected = Expected()
    seed = 0
    for category, types in layout.items():
        for i in range(normals):
            _image(root / category / "train" / "good" / f"{i:03d}.png", 1000 + i)
        _image(root / category / "test" / "good" / "000.png", 2000)
        for kind, n in types.items():
            for i in range(n):
                seed += 1
                _image(root / category / "test" / kind / f"{i:03d}.png", seed)
                _mask(root / category / "ground_truth" / kind / f"{i:03d}_mask.png", blob(seed))
            expected.records[f"{category}/{kind}"] = n
        expected.normals += normals + 1
    return expected


def write_mvtec_ad(root: Path) -> Expected:
    """``<cat>/train/good``, ``<cat>/test/<type>``, ``<cat>/ground_truth/<type>/NNN_mask.png``."""
    return _mvtec_like(
        root,
        {"bottle": {"broken_large": 2, "contamination": 1}, "cable": {"bent_wire": 1, "poke_insulation": 1},
         "transistor": {"misplaced": 1}},
        normals=2,
    )


def write_mpdd(root: Path) -> Expected:
    """MPDD is published in the MVTec AD layout."""
    return _mvtec_like(root, {"bracket_black": {"hole": 1, "scratches": 2}, "connector": {"parts_mismatch": 1}}, 1)


VISA_DEFECTS = {
    # category -> (image_anno.csv label, mask value of each defect as spot-diff's id2class numbers it)
    "candle": [("different colour spot", (4,)), ("chunk of wax missing,foreign particals on candle", (1, 6)),
               ("weird candle wick", (3,))],
    "pcb1": [("melt", (2,)), ("scratch", (3,)), ("bent,melt", (1, 2))],
    "pcb4": [("burnt,scratch", (1, 5))],  # values that are not the named defects' ids: not split
}
VISA_RECORDS = {
    "candle/different colour spot": 1, "candle/chunk of wax missing": 1, "candle/foreign particals on candle": 1,
    "candle/weird candle wick": 1, "pcb1/melt": 2, "pcb1/scratch": 1, "pcb1/bent": 1, "pcb4/burnt,scratch": 1,
}
"""What the VisA loader makes of them: two images are split by mask value, one is not."""


def write_visa(root: Path) -> Expected:
    """The VisA_20220922.tar tree: ``<cat>/Data/Images/{Normal,Anomaly}/NNNN.JPG``, masks whose values
    are defect ids (not 255), ``<cat>/image_anno.csv`` naming the defects (quoted when several,
    CRLF line ends) and ``split_csv/1cls.csv``."""
    rows = []
    expected = Expected(dict(VISA_RECORDS))
    for c, (category, anomalies) in enumerate(VISA_DEFECTS.items()):
        annotations = [("image", "label", "mask")]
        for i in range(3):
            rel = f"{category}/Data/Images/Normal/{i:04d}.JPG"
            _jpeg(root / rel, 10 * c + i)
            rows.append((category, "train" if i < 2 else "test", "normal", rel, ""))
            annotations.append((rel, "normal", ""))
        for i, (label, values) in enumerate(anomalies):
            rel = f"{category}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
            _jpeg(root / rel, 50 + 10 * c + i)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            for k, value in enumerate(values):  # one region per defect, 12 px apart
                mask[np.roll(blob(c * 7 + i), 12 * k, axis=1) > 0] = value
            _mask(root / mrel, mask, value=1)
            rows.append((category, "test", "anomaly", rel, mrel))
            annotations.append((rel, label, mrel))
        with open(root / category / "image_anno.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\r\n").writerows(annotations)
        expected.normals += 3
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return expected


def _jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "RGB").save(path, format="JPEG")


def write_ksdd2(root: Path) -> Expected:
    """``{train,test}/NNNNN.png`` + ``NNNNN_GT.png``; all-zero GT = normal."""
    n = 0
    for split, (bad, good) in (("train", (2, 3)), ("test", (1, 2))):
        for i in range(bad + good):
            n += 1
            _image(root / split / f"{n:05d}.png", n, size=(SIZE, 2 * SIZE))
            mask = blob(n, (SIZE, 2 * SIZE)) if i < bad else np.zeros((2 * SIZE, SIZE), np.uint8)
            _mask(root / split / f"{n:05d}_GT.png", mask)
    return Expected({"defect": 3}, 5)


BTAD_TYPES = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}
"""Product -> (image type, mask type), as btad.zip publishes them."""


def write_btad(root: Path) -> Expected:
    """``<product>/{train,test}/ok``, ``test/ko/NNNN.<ext>``, ``ground_truth/ko/NNNN.<ext>`` (no ``_mask``
    suffix): 01 BMP images + PNG masks, 02 PNG + PNG, 03 BMP + BMP; one 02 image has no mask."""
    for p, (product, (ext, mask_ext)) in enumerate(BTAD_TYPES.items()):
        for split in ("train", "test"):
            _image(root / product / split / "ok" / f"{p:04d}{ext}", 300 + p)
        for i in range(2):
            _image(root / product / "test" / "ko" / f"{i:04d}{ext}", 400 + 10 * p + i)
            _mask(root / product / "ground_truth" / "ko" / f"{i:04d}{mask_ext}", blob(400 + i))
    _image(root / "02" / "test" / "ko" / "0009.png", 499)  # its mask is missing
    return Expected({"01/ko": 2, "02/ko": 2, "03/ko": 2}, 6, {"no_annotation": 1})


LOCO_DEFECTS = {
    "breakfast_box": (
        "missing_almonds", "missing_bananas", "missing_toppings", "missing_cereals", "missing_cereals_and_toppings",
        "nectarines_2_tangerine_1", "nectarine_1_tangerine_1", "nectarines_0_tangerines_2", "nectarines_0_tangerines_3",
        "nectarines_3_tangerines_0", "nectarines_0_tangerine_1", "nectarines_0_tangerines_0",
        "nectarines_0_tangerines_4", "compartments_swapped", "overflow", "underflow", "wrong_ratio",
        "mixed_cereals", "fruit_damaged", "box_damaged", "toppings_crushed", "contamination",
    ),
    "pushpins": ("additional_1_pushpin", "additional_2_pushpins", "missing_pushpin", "missing_separator",
                 "front_bent", "broken", "color", "contamination"),
}
"""The published defects_config.json of two LOCO categories: names in order, pixel values 255, 254 ..."""
LOCO_IMAGES = {
    "breakfast_box": {"logical_anomalies": (("missing_almonds",), ("nectarines_0_tangerines_0", "overflow")),
                      "structural_anomalies": (("contamination",), ("box_damaged", "contamination"))},
    "pushpins": {"logical_anomalies": (("missing_pushpin",), ("additional_1_pushpin", "missing_separator")),
                 "structural_anomalies": (("broken",), ("color", "contamination"))},
}
"""Category -> type -> the defects of test images 000, 001 (one mask file each, in this order)."""


def defects_config(names: tuple[str, ...], first: int = 255) -> list[dict]:
    """A ``defects_config.json`` as MVTec publishes it: one entry per defect, values counting down."""
    return [{"defect_name": name, "pixel_value": first - i, "saturation_threshold": 1.0, "relative_saturation": True}
            for i, name in enumerate(names)]


def write_loco_category(folder: Path, config: list[dict], images: dict[str, tuple[tuple[str, ...], ...]],
                        seed: int, digits: int = 3, splits: tuple[str, ...] = ("train", "validation", "test")) -> int:
    """One category in MVTec LOCO's layout: ``defects_config.json``, a normal image per split, and per defective
    test image one ground-truth file per defect whose pixels hold the defect's value. Returns the masks written."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects_config.json").write_text(json.dumps(config, indent=4))
    value = {e["defect_name"]: e["pixel_value"] for e in config}
    for split in splits:
        _image(folder / split / "good" / f"{0:0{digits}d}.png", seed)
    masks = 0
    for k, (kind, defects) in enumerate(sorted(images.items())):
        for i, names in enumerate(defects):
            stem = f"{i:0{digits}d}"
            _image(folder / "test" / kind / f"{stem}.png", seed + 10 * (k + 1) + i)
            for d, name in enumerate(names):
                _mask(folder / "ground_truth" / kind / stem / f"{d:0{digits}d}.png", blob(seed + 50 + 3 * d + i), value[name])
                masks += 1
    return masks


def write_mvtec_loco(root: Path) -> Expected:
    """``<cat>/test/<type>/NNN.png`` with ``ground_truth/<type>/NNN/000.png, 001.png ...``: one file per defect,
    its pixels the defect's value in the category's ``defects_config.json`` (the published values)."""
    records: dict[str, int] = {}
    for c, (category, images) in enumerate(LOCO_IMAGES.items()):
        write_loco_category(root / category, defects_config(LOCO_DEFECTS[category]), images, 600 + 100 * c)
        for defects in images.values():
            for name in (n for names in defects for n in names):
                records[f"{category}/{name}"] = records.get(f"{category}/{name}", 0) + 1
    return Expected(records, 6)


def write_mvtec_loco_with_faults(root: Path) -> Expected:
    """The fake LOCO tree plus one of each fault the reader must skip, by name, without stopping: its records
    are the fake tree's, its skipped items one per reason."""
    expected = write_mvtec_loco(root)
    gt = root / "breakfast_box" / "ground_truth" / "structural_anomalies"
    _mask(gt / "000" / "001.png", blob(1), value=200)  # a value the config does not name
    two = np.zeros((SIZE, SIZE), np.uint8)
    two[:4, :4], two[-4:, -4:] = 234, 236
    Image.fromarray(two).save(gt / "001" / "002.png")  # two defects in one file
    _mask(gt / "001" / "003.png", np.zeros((SIZE, SIZE), np.uint8))  # all zero
    (gt / "001" / "004.png").write_bytes(b"not a png")
    _image(root / "breakfast_box" / "test" / "structural_anomalies" / "002.png", 1)  # no mask folder
    config = root / "breakfast_box" / "defects_config.json"
    entries = json.loads(config.read_text())
    entries[-2]["defect_name"] = "toppings_crushed_"  # 235: a spelling the catalogue does not list
    config.write_text(json.dumps(entries))
    _mask(gt / "000" / "002.png", blob(2), value=235)
    # juice_bottle without a config; screw_bag with one that is not JSON
    for category, config_bytes in (("juice_bottle", None), ("screw_bag", b"{not json")):
        write_loco_category(root / category, defects_config(("contamination",)),
                            {"structural_anomalies": (("contamination",),)}, 1300)
        if config_bytes is None:
            (root / category / "defects_config.json").unlink()
        else:
            (root / category / "defects_config.json").write_bytes(config_bytes)
    return replace(expected, skipped={
        "unknown_mask_value": 1, "several_mask_values": 1, "empty_mask": 1, "corrupt_mask": 1, "no_annotation": 1,
        "defect_not_in_catalogue": 1, "no_defects_config": 1, "bad_defects_config": 1})


AUTOVI_IMAGES = {
    "engine_wiring": {"blue_hoop": (("blue_hoop",),), "cardboard": (("cardboard",),),
                      "fastening": (("fastening",), ("fastening",)), "multiple": (("multiple", "multiple"),)},
    "pipe_clip": {"unclipped": (("unclipped",),), "operator": (("operator",),)},
    "pipe_staple": {"missing": (("missing",),)},
    "tank_screw": {"missing": (("missing",),)},
    "underbody_pipes": {"obstruction": (("obstruction",),)},
    "underbody_screw": {"missing": (("missing",),)},
}
"""AutoVI's six categories (one zip each), their defect folders and the defects of test images 0000, 0001."""


def write_autovi(root: Path) -> Expected:
    """AutoVI's layout: LOCO's with four-digit names, no ``validation``, one folder per defect type, plus each
    category's ``readme.md``, ``license.txt`` and ``defect_example.png`` beside its ``defects_config.json``."""
    records: dict[str, int] = {}
    for c, (category, images) in enumerate(AUTOVI_IMAGES.items()):
        names = tuple(dict.fromkeys(images))
        write_loco_category(root / category, defects_config(names, 255 - c), images, 1400 + 100 * c, digits=4,
                            splits=("train", "test"))
        (root / category / "readme.md").write_text(f"# AutoVI {category}\n")
        (root / category / "license.txt").write_text("CC BY-NC-SA 4.0\n")
        _image(root / category / "defect_example.png", 1399)
        for defects in images.values():
            for name in (n for names in defects for n in names):
                records[f"{category}/{name}"] = records.get(f"{category}/{name}", 0) + 1
    return Expected(records, 12)


def write_dagm2007(root: Path) -> Expected:
    """``Class<k>/<Split>/NNNN.PNG``, ``Label/NNNN_label.PNG`` (a filled ellipse) and ``Label/Labels.txt``."""
    for k in (1, 2):
        for split in ("Train", "Test"):
            folder = root / f"Class{k}" / split
            lines = ["1"]
            for i in range(3):
                name = f"{i:04d}.PNG"
                _image(folder / name, 800 + 10 * k + i, mode="L")
                if i == 0:  # the only defective image of the folder
                    ellipse = np.zeros((SIZE, SIZE), np.uint8)
                    cv2.ellipse(ellipse, (16, 16), (9, 4), 30, 0, 360, 1, thickness=-1)
                    _mask(folder / "Label" / f"{i:04d}_label.PNG", ellipse)
                    lines.append(f"{i + 1}\t1\t{name}\t0\t{i:04d}_label.PNG")
                else:
                    lines.append(f"{i + 1}\t0\t{name}\t0\t")
            (folder / "Label").mkdir(parents=True, exist_ok=True)
            (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return Expected({"Class1": 2, "Class2": 2}, 8)


def write_kolektorsdd_original(root: Path) -> Expected:
    """``kosNN/PartK.jpg`` + ``PartK_label.bmp`` (all zero for a defect-free part)."""
    for n in (1, 2):
        for k in range(3):
            _image(root / f"kos{n:02d}" / f"Part{k}.jpg", 900 + 10 * n + k, mode="L", size=(SIZE, 2 * SIZE))
            defect = k == 0
            label = blob(900 + n, (SIZE, 2 * SIZE)) if defect else np.zeros((2 * SIZE, SIZE), np.uint8)
            path = root / f"kos{n:02d}" / f"Part{k}_label.bmp"
            Image.fromarray(label * 255, "L").save(path)
    return Expected({"defect": 2}, 4)


def write_folder(root: Path) -> Expected:
    """A user's collection: PNG masks, a COCO file, LabelMe and EISeg JSON, one image without a mask."""
    rows = [("image", "class", "source", "licence", "url", "note", "mask")]
    # 1: PNG mask named in the metadata
    _image(root / "images" / "a.jpg", 1)
    _mask(root / "labels" / "a_mask.png", blob(1))
    rows.append(("images/a.jpg", "crack", "online_search", "CC-BY-4.0", "https://example.org/a.jpg", "", "labels/a_mask.png"))
    # 2: masks/<stem>.png by convention
    _image(root / "images" / "b.png", 2)
    _mask(root / "masks" / "b.png", blob(2))
    rows.append(("images/b.png", "stain", "reality_photo", "", "", "own photo", ""))
    # 3: COCO polygons (two instances)
    _image(root / "images" / "c.jpg", 3)
    coco = {
        "images": [{"id": 7, "file_name": "images/c.jpg", "width": SIZE, "height": SIZE}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [[20, 20, 28, 20, 28, 28]]},
        ],
        "categories": [{"id": 1, "name": "hole"}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    rows.append(("images/c.jpg", "hole", "", "", "", "", ""))
    # 4: LabelMe JSON beside the image (polygon + rectangle)
    _image(root / "images" / "d.jpg", 4)
    labelme = {"imageWidth": SIZE, "imageHeight": SIZE, "imagePath": "d.jpg", "shapes": [
        {"label": "scratch", "shape_type": "polygon", "points": [[1, 1], [10, 1], [10, 4]]},
        {"label": "scratch", "shape_type": "rectangle", "points": [[15, 15], [25, 20]]},
    ]}
    (root / "images" / "d.json").write_text(json.dumps(labelme))
    rows.append(("images/d.jpg", "scratch", "", "", "", "", ""))
    # 5: EISeg JSON named in the metadata
    _image(root / "images" / "e.jpg", 5)
    eiseg = [{"name": "pits", "labelIdx": 1, "color": [255, 0, 0], "points": [[4, 4], [14, 4], [14, 14], [4, 14]]}]
    (root / "labels" / "e.json").write_text(json.dumps(eiseg))
    rows.append(("images/e.jpg", "pits", "", "", "", "", "labels/e.json"))
    # 6: no mask yet -> needs_mask
    _image(root / "images" / "f.jpg", 6)
    rows.append(("images/f.jpg", "abrasion", "", "", "", "", ""))
    # 7: a class that is not DAAD's, 8: an image that is not there
    rows.append(("images/a.jpg", "dent", "", "", "", "", ""))
    rows.append(("images/missing.jpg", "crack", "", "", "", "", ""))
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return Expected({"crack": 1, "stain": 1, "hole": 1, "scratch": 1, "pits": 1, "abrasion": 1}, 0,
                    {"bad_metadata": 1, "missing": 1})


def write_neu_seg(root: Path) -> Expected:
    """``images/{training,test}/NNNNNN.jpg`` (RGB JPEG) + ``annotations/<split>/NNNNNN.png`` whose
    values 1/2/3 are inclusion/patches/scratches (one mask with two classes); the splits reuse
    numbers; one all-background mask, one mask with a value 4, one image without a mask."""
    masks = {
        ("training", "000201"): {1: 0},
        ("training", "000202"): {2: 1, 3: 2},
        ("training", "000203"): {},
        ("training", "000204"): {3: 3},
        ("test", "000201"): {1: 4},
        ("test", "000202"): {4: 5},
    }
    for seed, ((split, number), classes) in enumerate(masks.items()):
        _image(root / "images" / split / f"{number}.jpg", 950 + seed)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for value, where in classes.items():
            mask[blob(960 + where) > 0] = value
        _mask(root / "annotations" / split / f"{number}.png", mask, value=1)
    _image(root / "images" / "test" / "000203.jpg", 990)
    return Expected(
        {"inclusion": 2, "patches": 1, "scratches": 2}, 0,
        {"empty_mask": 1, "unknown_mask_value": 1, "no_annotation": 1},
    )


def write_mvtec_3d(root: Path) -> Expected:
    """``<cat>/{train,validation,test}/<type>/rgb/NNN.png`` with ``gt/NNN.png`` (0/255) and ``xyz/NNN.tiff`` beside."""
    layout = {"bagel": {"crack": 2, "combined": 1}, "cable_gland": {"thread": 1, "bent": 1}}
    expected = Expected()
    seed = 3000
    for category, types in layout.items():
        for split in ("train", "validation", "test"):
            _image(root / category / split / "good" / "rgb" / "000.png", seed)
            _mask(root / category / split / "good" / "gt" / "000.png", np.zeros((SIZE, SIZE), np.uint8))
            expected.normals += 1
        for kind, n in types.items():
            for i in range(n):
                seed += 1
                folder = root / category / "test" / kind
                _image(folder / "rgb" / f"{i:03d}.png", seed)
                _mask(folder / "gt" / f"{i:03d}.png", blob(seed))
                (folder / "xyz").mkdir(parents=True, exist_ok=True)
                (folder / "xyz" / f"{i:03d}.tiff").write_bytes(b"II*\x00")
            expected.records[kind] = expected.records.get(kind, 0) + n
    return expected


def write_adam_3d(root: Path) -> Expected:
    """3D-ADAM as anomalib unpacks it: ``<cat>/{train,validation,test}/<type>/rgb/<name>.png`` with the mask of
    the same name in ``ground_truth/`` (0/255; all black for ``good``) and ``xyz/<name>.tiff`` beside. Quirks a
    real release may have: a folder name the catalogue does not list (``stringing``), a defect image with an
    all-black mask, one without its mask file, one 16-bit grey image."""
    expected = Expected(skipped={"empty_mask": 1, "no_annotation": 1, "unsupported_mode": 1})
    for k, category in enumerate(("1m1", "spurgear")):
        for split, n in (("train", 2), ("validation", 1), ("test", 1)):
            for i in range(n):
                folder = root / category / split / "good"
                _image(folder / "rgb" / f"{i:03d}_A.png", 3400 + 10 * k + 3 * i + len(split))
                _mask(folder / "ground_truth" / f"{i:03d}_A.png", np.zeros((SIZE, SIZE), np.uint8))
                (folder / "xyz").mkdir(parents=True, exist_ok=True)
                (folder / "xyz" / f"{i:03d}_A.tiff").write_bytes(b"II*\x00")
                expected.normals += 1
    defects = {"1m1": {"hole": 2, "bulge": 1, "crack": 2}, "spurgear": {"scratch": 1, "stringing": 1, "cut": 2,
                                                                        "contamination": 1}}
    faulty = {("crack", 1): "all-black mask", ("cut", 1): "no mask file", ("contamination", 0): "16-bit grey"}
    seed = 3500
    for category, types in defects.items():
        for kind, n in types.items():
            for i in range(n):
                seed += 1
                folder, name, fault = root / category / "test" / kind, f"{i:03d}_C", faulty.get((kind, i))
                (folder / "xyz").mkdir(parents=True, exist_ok=True)
                (folder / "xyz" / f"{name}.tiff").write_bytes(b"II*\x00")
                if fault == "16-bit grey":  # more than 8 bits a channel: refused, PIL would clip it
                    (folder / "rgb").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((SIZE, SIZE), 40000, np.uint16)).save(folder / "rgb" / f"{name}.png")
                else:
                    _image(folder / "rgb" / f"{name}.png", seed)
                if fault != "no mask file":
                    mask = np.zeros((SIZE, SIZE), np.uint8) if fault == "all-black mask" else blob(seed)
                    _mask(folder / "ground_truth" / f"{name}.png", mask)
                if fault is None:
                    expected.records[kind] = expected.records.get(kind, 0) + 1
    return expected


def write_mvtec_ad2(root: Path) -> Expected:
    """``<cat>/train/good``, ``<cat>/test_public/{good,bad}`` + ``test_public/ground_truth/bad/<name>_mask.png``;
    ``test_private`` and ``test_private_mixed`` without masks."""
    for k, category in enumerate(("sheet_metal", "vial")):
        _image(root / category / "train" / "good" / "000_regular.png", 3100 + k)
        _image(root / category / "test_public" / "good" / "000_regular.png", 3110 + k)
        for i in range(2):
            name = f"00{i}_regular"
            _image(root / category / "test_public" / "bad" / f"{name}.png", 3120 + 2 * k + i)
            _mask(root / category / "test_public" / "ground_truth" / "bad" / f"{name}_mask.png", blob(3120 + 2 * k + i))
        _image(root / category / "test_private" / "000_regular.png", 3130 + k)
        _image(root / category / "test_private_mixed" / "000_mixed.png", 3140 + k)
    return Expected({"bad": 4}, 4)


def write_aebad(root: Path) -> Expected:
    """AeBAD-S: ``AeBAD_S/train/good/<domain>/NNN.png``, ``AeBAD_S/test/<type>/<domain>/NNN.png`` and
    ``AeBAD_S/ground_truth/<type>/<domain>/NNN.png`` (0/255); test/good has no masks."""
    base = root / "AeBAD_S"
    _image(base / "train" / "good" / "background" / "000.png", 3200)
    _image(base / "test" / "good" / "same" / "000.png", 3201)
    counts = {"ablation": ("same", "view"), "fracture": ("illumination",), "groove": ("background",)}
    for k, (kind, domains) in enumerate(counts.items()):
        for d, domain in enumerate(domains):
            seed = 3210 + 10 * k + d
            _image(base / "test" / kind / domain / "001.png", seed)
            _mask(base / "ground_truth" / kind / domain / "001.png", blob(seed))
    return Expected({"ablation": 2, "fracture": 1, "groove": 1}, 1)


def write_rsdds(root: Path) -> Expected:
    """``Type-I RSDDs dataset/{Rail surface images,GroundTruth}/rail_N.jpg`` and the same for Type-II (JPEG masks)."""
    for kind, n, size in (("Type-I", 2, (SIZE, 3 * SIZE)), ("Type-II", 1, (SIZE // 2, 3 * SIZE))):
        for i in range(1, n + 1):
            seed = 3300 + 10 * (kind == "Type-II") + i
            _image(root / f"{kind} RSDDs dataset" / "Rail surface images" / f"rail_{i}.jpg", seed, mode="L", size=size)
            path = root / f"{kind} RSDDs dataset" / "GroundTruth" / f"rail_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(blob(seed, size) * 255, "L").save(path, quality=75)
    return Expected({"defect": 3})


def textured_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth grey texture (RGB), the kind of surface an inspection camera sees."""
    base = cv2.GaussianBlur(rng.normal(150, 25, (size, size)).astype(np.float32), (0, 0), 3)
    return np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def write_textured_mvtec_category(root: Path, seed: int = 0, size: int = 128, train: int = 24, test: int = 8) -> Expected:
    """One MVTec-layout category whose defects can be learned: ``train/good`` and ``test/good`` smooth
    textures, ``test/scratch`` (thin dark lines) and ``test/stain`` (dark ellipses) with
    ``ground_truth/<type>/NNN_mask.png`` (0/255). For experiments that need a detectable defect."""
    rng = np.random.default_rng(seed)
    for i in range(train):
        Image.fromarray(textured_normal(rng, size)).save(_mkdir(root / "train" / "good") / f"{i:03d}.png")
    for i in range(test):
        Image.fromarray(textured_normal(rng, size)).save(_mkdir(root / "test" / "good") / f"{i:03d}.png")
    for kind in ("scratch", "stain"):
        for i in range(test):
            image, mask = textured_normal(rng, size), np.zeros((size, size), np.uint8)
            if kind == "scratch":
                p, q = rng.integers(8, size - 8, 2), rng.integers(8, size - 8, 2)
                cv2.line(mask, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, int(rng.integers(1, 4)))
            else:
                centre = (int(rng.integers(12, size - 12)), int(rng.integers(12, size - 12)))
                axes = (int(rng.integers(3, 10)), int(rng.integers(2, 7)))
                cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            image[mask > 0] = (image[mask > 0] * 0.45).astype(np.uint8)
            Image.fromarray(image).save(_mkdir(root / "test" / kind) / f"{i:03d}.png")
            _mask(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return Expected({f"{root.name}/scratch": test, f"{root.name}/stain": test}, train + test)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
