"""Fake trees made from the catalogue alone, for every source whose layout is data.

A source described by a ``[<origin>.layout]`` table (image/mask path templates, or the MVTec
tree with its naming) needs no hand-written writer: :func:`write_layout_tree` reads the
entry and writes one small image with its mask per native label of the class map, and one
defect-free image per normal label (or per category; with ``labels``, the other labels' masks
all black), so adding such a source to
``sources.toml`` gives it a fake tree for free. Quirks of a real release (missing masks,
all-black masks ...) stay in :mod:`helpers.fake_datasets`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from daad.loaders.mvtec_layout import READER as MVTEC_READER
from daad.loaders.mvtec_layout import MvtecLayout
from daad.registry.catalogue import Layout, SourceEntry
from helpers.fake_datasets import SIZE, Expected, _image, _mask, blob

GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<pattern>(?:[^()\\]|\\.)*)\)")


def has_data_layout(entry: SourceEntry) -> bool:
    """Whether ``entry``'s files are read through its catalogue layout alone."""
    layout = entry.layout
    return isinstance(layout, Layout) or (isinstance(layout, dict) and layout.get("reader") == MVTEC_READER)


def write_layout_tree(entry: SourceEntry, root: Path) -> Expected:
    """A tree in ``entry``'s catalogue layout, and what its loader must find there."""
    if isinstance(entry.layout, Layout):
        return _layout_tree(entry, entry.layout, Path(root))
    return _mvtec_tree(entry, MvtecLayout.of(entry), Path(root))


def _template(match: str) -> tuple[str, dict[str, str]]:
    """The path template of a ``match`` expression (each named group a ``{field}``) and each group's pattern."""
    patterns = {m["name"]: m["pattern"] for m in GROUP.finditer(match)}
    template = GROUP.sub(lambda m: "{" + m["name"] + "}", match)
    return re.sub(r"\\(.)", r"\1", template), patterns


def _value(pattern: str, fallback: str) -> str:
    """A value the group's pattern matches: its first alternative when it lists literals."""
    first = pattern.split("|")[0]
    return first if re.fullmatch(r"[\w.-]+", first) else fallback


def _layout_tree(entry: SourceEntry, layout: Layout, root: Path) -> Expected:
    image_template, patterns = _template(layout.match)
    expected = Expected()
    labels = [label for label in entry.classes if layout.label is None or label == layout.label] or [layout.label]
    items = [(label, False) for label in labels] + [(label, True) for label in layout.normal_labels]
    if layout.unannotated == "normal":
        items.append((labels[0], True))
    for seed, (label, normal) in enumerate(items, start=1):
        groups = {name: _value(pattern, f"img{seed}") for name, pattern in patterns.items() if name != "label"}
        if "label" in patterns:
            groups["label"] = label
        image = root / image_template.format(**groups)
        groups = layout.values(groups)
        _image(image, seed)
        assert re.fullmatch(layout.match, image.relative_to(root).as_posix()), image
        if normal:
            expected.normals += 1
            continue
        mask = root / layout.mask.format(**groups, **({"label": label} if layout.labels else {}))
        for other in set(layout.labels) - {label}:  # one mask per label, the others all black
            _mask(root / layout.mask.format(**groups, label=other), blob(seed) * 0)
        if layout.mask_format == "labelme":
            mask.parent.mkdir(parents=True, exist_ok=True)
            mask.write_text(json.dumps({
                "imageHeight": SIZE, "imageWidth": SIZE, "imagePath": image.name,
                "shapes": [{"label": label, "points": [[4, 4], [20, 5], [12, 18]], "shape_type": "polygon"}],
            }))
        else:
            _mask(mask, blob(seed), value=255)
        expected.records[label] = expected.records.get(label, 0) + 1
    return expected


def _mvtec_tree(entry: SourceEntry, layout: MvtecLayout, root: Path) -> Expected:
    expected = Expected()
    categories = set()
    for seed, label in enumerate(entry.classes, start=1):
        category, kind = label.split("/", 1)
        categories.add(category)
        _image(root / category / "test" / kind / "000.png", seed)
        mask = root / category / "ground_truth" / kind / f"000{layout.mask_suffix}{layout.mask_extensions[0]}"
        _mask(mask, blob(seed))
        expected.records[label] = 1
    for category in sorted(categories):
        _image(root / category / "train" / layout.normal / "000.png", 0)
        expected.normals += 1
    return expected
