"""The card's table of sources: per origin, the rows built, the near copies left out, the
licence, whether it allows commercial use, and how its files were obtained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daad.registry.catalogue import CatalogueError, SourceEntry

if TYPE_CHECKING:
    from daad.dataset.build import BuildSummary
    from daad.registry.registry import Registry


def how_obtained(entry: SourceEntry, committed: bool) -> str:
    """How ``daad build`` gets an origin's files: which pin it is checked against, or by hand."""
    spec = entry.download
    if spec is not None and committed:
        return "by itself: pinned commit, every image's sha256 in the committed manifest"
    if spec is not None and spec.sha256 is not None:
        return "by itself: sha256-pinned archive, manifest written at download"
    if spec is not None and spec.md5 is not None:
        return "by itself: md5-pinned archive (no sha256 published), manifest written at download"
    if committed:
        return "committed manifest; files by hand (`--root`) or `daad fetch`"
    return "by hand (`--root`), manifest written by `daad ingest`"


def sources_section(registry: Registry, summary: BuildSummary) -> list[str]:
    """Markdown lines of the table, one row per origin built or left out as duplicates."""
    duplicates = {k.split(":", 1)[1]: n for k, n in summary.skipped.items() if k.startswith("duplicate:")}
    origins = sorted(set(summary.origins) | set(duplicates))
    licences = registry.licences
    lines = ["", "## Sources", "",
             "| source | rows | near copies left out | licence | commercial use | how obtained |", "|---|---|---|---|---|---|"]
    for origin in origins:
        try:
            entry = registry.catalogue[origin]
        except CatalogueError:
            lines.append(f"| `{origin}` | {summary.origins.get(origin, 0)} | {duplicates.get(origin, 0)} | | | |")
            continue
        commercial = "yes" if entry.licence in licences and licences[entry.licence].commercial else "no"
        how = how_obtained(entry, registry.committed_manifest(origin) is not None)
        lines.append(f"| {entry.name} (`{origin}`) | {summary.origins.get(origin, 0)} | {duplicates.get(origin, 0)} "
                     f"| `{entry.licence}` | {commercial} | {how} |")
    return lines
