"""The dataset card of a registry build: YAML configs and features, then a human part
with counts per class x source x licence, the licence breakdown and every citation."""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from daad.catalogue import CatalogueError
from daad.features import REGISTRY_FEATURES
from daad.licences import LicenceCatalogue
from daad.shards import card_text, features_yaml
from daad.taxonomy import ANOMALY_CLASSES, CLASS_DEFINITIONS

if TYPE_CHECKING:
    from daad.build import BuildSummary
    from daad.registry import Registry

DUP_MARK = "-dup-"
"""Shard name mark of near copies of evaluation images (see :func:`daad.build.shard_of`)."""
LEAK_FREE_PREFIX = "no-"
"""Leak-free config of evaluation dataset ``X`` is ``no-X`` (``load_dataset(path, "no-mvtec_ad")``)."""


def configs_for(registry: Registry, files: list[str]) -> dict[str, list[str]]:
    """Config name -> data files: ``default``, one per class present, one leak-free per evaluation dataset."""
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
        if chosen:
            configs[f"{LEAK_FREE_PREFIX}{name}"] = chosen
    return configs


def _near_copy_of(file: str) -> list[str]:
    """Evaluation datasets a shard's rows are near copies of (from ``<class>-dup-<E>[-<E2>...]``)."""
    _, _, dups = PurePosixPath(file).stem.partition(DUP_MARK)
    return dups.split("-") if dups else []


def registry_card(registry: Registry, summary: BuildSummary, files: list[str]) -> str:
    configs = configs_for(registry, files)
    features = features_yaml(REGISTRY_FEATURES)
    front = {
        "pretty_name": "DAAD: Domain-Agnostic Anomaly Dataset",
        "license": "other",
        "task_categories": ["image-segmentation"],
        "tags": ["anomaly-detection", "industrial", "defects"],
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": paths}]}
            for name, paths in configs.items()
        ],
        "dataset_info": [{"config_name": name, "features": features} for name in configs],
    }
    return card_text(front, _body(registry, summary, configs))


def _body(registry: Registry, summary: BuildSummary, configs: dict[str, list[str]]) -> str:
    lines = [
        "# DAAD: Domain-Agnostic Anomaly Dataset",
        "",
        "Real industrial anomaly images with pixel masks from many domains, organised by "
        "anomaly class, source and licence. Built by `daad build` from the manifests; "
        "images are stored as published, masks as 0/255 PNG.",
        "",
        f"{summary.line()}.",
        "",
        "## Anomaly classes",
        "",
        "| id | class | definition |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {c} | {CLASS_DEFINITIONS[c]} |" for i, c in enumerate(ANOMALY_CLASSES)]
    lines += ["", "## Configs", "", "| config | shards |", "|---|---|"]
    lines += [f"| `{name}` | {len(paths)} |" for name, paths in configs.items()]
    lines += ["", "## Counts (class x source x licence)", "", "| class | source | licence | rows |", "|---|---|---|---|"]
    lines += [f"| {c} | {s} | {lic} | {n} |" for (c, s, lic), n in sorted(summary.counts.items())]
    licences: Counter = Counter()
    for (_, _, lic), n in summary.counts.items():
        licences[lic] += n
    catalogue = LicenceCatalogue.load(registry.manifests_dir)
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
    return "\n".join(lines)
