"""The dataset card of a registry build: YAML configs and features, then a human part
with counts per class x source x licence, each source's rows, licence and how it was
obtained, the licence breakdown and every citation."""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from datasets import Value

from daad.dataset.build_rows import DUP_MARK
from daad.registry.catalogue import CatalogueError
from daad.dataset.sources_table import sources_section
from daad.dataset.features import REGISTRY_FEATURES
from daad.dataset.shards import card_text, features_yaml
from daad.taxonomy import ANOMALY_CLASSES, CLASS_DEFINITIONS

if TYPE_CHECKING:
    from daad.dataset.summary import BuildSummary
    from daad.registry import Registry

LEAK_FREE_PREFIX = "no-"
"""Leak-free config of evaluation dataset ``X`` is ``no-X`` (``load_dataset(path, "no-mvtec_ad")``)."""


HUB_LICENCES = frozenset({
    "apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-4.0", "cc-by-3.0", "cc-by-sa-3.0", "cc-by-nc-3.0", "cc-by-nc-sa-3.0", "odbl", "unknown",
})
"""Licence ids of the Hub's card spec that SPDX ids map to (lower-cased); any other licence is ``other``."""
FIELDS = {
    "id": "`<origin>/<native id>`, stable across builds",
    "image": "the image bytes as published; decoded as RGB with its EXIF orientation applied",
    "mask": "PNG, same size as the image: 255 = anomaly, 0 = background",
    "anomaly_class": "one of the eight classes below (ClassLabel)",
    "source": "`existing_dataset`, `online_search` or `reality_photo`",
    "origin": "the dataset or site the record comes from (see Attribution)",
    "native_label": "the origin's own defect name",
    "licence": "SPDX id or `LicenseRef-...` of this record (see Licences)",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "bbox": "box around the mask: x, y, width, height in pixels",
    "area": "anomaly pixels in the mask",
    "phash": "64-bit perceptual hash of the image (hex), for near-duplicate checks",
    "image_sha256": "sha256 of the image bytes",
    "split": "the origin's own split, where it has one",
    "url": "where a web image was fetched from",
    "page_url": "the page a web image was found on",
}
"""What each column of the built dataset holds (the card's Data Fields)."""
DAAD_CITATION = """@misc{cai_daad,
  title        = {``Stones from Other Hills can Polish Jade'': Zero-shot Anomaly Image Synthesis via Cross-domain Anomaly Injection},
  note         = {Cross-domain Anomaly Injection (CAI), the Domain-Agnostic Anomaly Dataset (DAAD) and the CAI-guided Diffusion Mechanism (CDM)},
  howpublished = {\\url{https://github.com/HU13-SVG/Cross-domain-Anomaly-Injection}},
}"""


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of ``rows``."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def hub_licence(licences: list[str]) -> dict[str, object]:
    """The card's ``license`` fields for the licences present: Hub ids, and ``other`` with
    ``license_name``/``license_link`` for the rest."""
    ids = sorted({lic.lower() if lic.lower() in HUB_LICENCES else "other" for lic in licences}) or ["unknown"]
    front: dict[str, object] = {"license": ids[0] if len(ids) == 1 else ids}
    others = sorted(lic for lic in licences if lic.lower() not in HUB_LICENCES)
    if others:
        front |= {"license_name": ", ".join(others), "license_link": "README.md#licences"}
    return front


def configs_for(registry: Registry, files: list[str]) -> dict[str, list[str]]:
    """Config name -> data files: ``default``, one per class present, one leak-free per
    evaluation dataset whose view differs from ``default`` (see :func:`unaffected_evaluations`)."""
    origin_of = {f: PurePosixPath(f).parts[1] for f in files}
    class_of = {f: PurePosixPath(f).stem.split("-", 1)[0] for f in files}
    near_copy_of = {f: _near_copy_of(f) for f in files}
    configs = {"default": files}
    for cls in ANOMALY_CLASSES:
        chosen = [f for f in files if class_of[f] == cls]
        if chosen:
            configs[cls] = chosen
    for name, rule in registry.rules.rules.items():
        chosen = [f for f in files if origin_of[f] not in rule.origins and name not in near_copy_of[f]]
        if chosen and chosen != files:
            configs[f"{LEAK_FREE_PREFIX}{name}"] = chosen
    return configs


def unaffected_evaluations(registry: Registry, configs: dict[str, list[str]]) -> list[str]:
    """Evaluation datasets nothing in the build leaks into (their leak-free view is ``default``)."""
    return [name for name in registry.rules.rules if f"{LEAK_FREE_PREFIX}{name}" not in configs]


def _near_copy_of(file: str) -> list[str]:
    """Evaluation datasets a shard's rows are near copies of (from ``<class>-dup-<E>[-<E2>...]``)."""
    _, _, dups = PurePosixPath(file).stem.partition(DUP_MARK)
    return dups.split("-") if dups else []


def registry_card(registry: Registry, summary: BuildSummary, files: list[str], samples: str | None = None) -> str:
    """The card of a build of ``files``; ``samples``: the build's sample grid image, shown under the summary."""
    configs = configs_for(registry, files)
    features = features_yaml(REGISTRY_FEATURES)
    licences = sorted({lic for (_, _, lic) in summary.counts})
    front = {
        "pretty_name": "DAAD: Domain-Agnostic Anomaly Dataset",
        **hub_licence(licences),
        "task_categories": ["image-segmentation"],
        "task_ids": ["semantic-segmentation"],
        "size_categories": [size_category(summary.accepted)],
        "tags": ["anomaly-detection", "industrial", "defects"],
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": paths}]}
            for name, paths in configs.items()
        ],
        "dataset_info": [{"config_name": name, "features": features} for name in configs],
    }
    return card_text(front, _body(registry, summary, configs, samples))


def _body(registry: Registry, summary: BuildSummary, configs: dict[str, list[str]], samples: str | None) -> str:
    lines = [
        "# DAAD: Domain-Agnostic Anomaly Dataset",
        "",
        "Real industrial anomaly images with pixel masks from many domains, organised by "
        "anomaly class, source and licence. Built by `daad build` from the manifests; "
        "images are stored as published, masks as 0/255 PNG.",
        "",
        f"{summary.line()}.",
        "",
        *([f"![Samples of every class, spread across origins; the mask outlined in red]({samples})", ""]
          if samples else []),
        "## Anomaly classes",
        "",
        "| id | class | definition |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {c} | {CLASS_DEFINITIONS[c]} |" for i, c in enumerate(ANOMALY_CLASSES)]
    lines += ["", "## Data Fields", "", "| column | type | holds |", "|---|---|---|"]
    lines += [f"| `{name}` | {_type_name(REGISTRY_FEATURES[name])} | {FIELDS[name]} |" for name in REGISTRY_FEATURES]
    lines += ["", "## Configs", "", "| config | shards |", "|---|---|"]
    lines += [f"| `{name}` | {len(paths)} |" for name, paths in configs.items()]
    unaffected = unaffected_evaluations(registry, configs)
    if unaffected:
        lines += ["", "Nothing in this build leaks into " + ", ".join(f"`{n}`" for n in unaffected)
                  + ": an evaluation on these needs no leak-free config (use `default`)."]
    lines += ["", "## Counts (class x source x licence)", "", "| class | source | licence | rows |", "|---|---|---|---|"]
    lines += [f"| {c} | {s} | {lic} | {n} |" for (c, s, lic), n in sorted(summary.counts.items())]
    lines += sources_section(registry, summary)
    licences: Counter = Counter()
    for (_, _, lic), n in summary.counts.items():
        licences[lic] += n
    catalogue = registry.licences
    lines += [
        "",
        "## Licences",
        "",
        f"Licence policy of this build: `{summary.licence_policy}`.",
        "",
        "| licence | rows | commercial use | attribution | share-alike | terms |",
        "|---|---|---|---|---|---|",
    ]
    for lic, n in sorted(licences.items()):
        terms = catalogue[lic]
        yes_no = ["yes" if flag else "no" for flag in (terms.commercial, terms.attribution, terms.share_alike)]
        lines.append(f"| {lic} | {n} | {' | '.join(yes_no)} | {terms.url or terms.name} |")
    restrictions = catalogue.restrictions(licences)
    if restrictions:
        lines += ["", "Restrictions: " + "; ".join(restrictions) + "."]
    if summary.skipped:
        lines += ["", "## Not built", "", "| reason | records |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(summary.skipped.items())]
        if any(k.startswith("duplicate:") for k in summary.skipped):
            lines += [
                "",
                "`duplicate:<origin>`: records of that origin whose image is a near copy (any 90° rotation or "
                "mirror, crop, re-encoding) of another record's, marked `duplicate_of` by `daad dedup`; "
                "the original publisher's record is built instead.",
            ]
    lines += ["", "## Attribution", "", "Every origin in this build, its licence and how to cite it.", ""]
    for origin, n in sorted(summary.origins.items()):
        try:
            entry = registry.catalogue[origin]
        except CatalogueError:
            lines += [f"### {origin}", "", f"{n} rows. No catalogue entry.", ""]
            continue
        lines += [
            f"### {entry.name} (`{origin}`)",
            "",
            f"{n} rows. Homepage: {entry.homepage}. Licence: `{entry.licence}`"
            + (f" ({entry.licence_url})" if entry.licence_url else "")
            + ".",
            "",
        ]
        if entry.citation:
            lines += ["```bibtex", entry.citation, "```", ""]
    lines += ["## Citation", "", "DAAD and CAI:", "", "```bibtex", DAAD_CITATION, "```", ""]
    return "\n".join(lines)


def _type_name(feature) -> str:
    """``string``, ``int32`` ... for a value column, else the feature's kind (``Image``, ``ClassLabel``, ``List``)."""
    return feature.dtype if isinstance(feature, Value) else type(feature).__name__
