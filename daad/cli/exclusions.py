"""``daad exclusions hash``: the perceptual hashes of an evaluation dataset's images, the leakage guard's data."""

from __future__ import annotations

from typing import Annotated

import typer

from daad.cli.app import app, console, open_registry, output, print_json
from daad.cli.options import ManifestsOption, RootOption

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")
exclusions_app = typer.Typer(help="Exclusion (leakage) rules and evaluation-set hashes.", no_args_is_help=True)
app.add_typer(exclusions_app, name="exclusions")


@exclusions_app.command("hash")
def hash_images(
    dataset: Annotated[str, typer.Argument(help="Evaluation dataset with a loader, e.g. kolektorsdd.")],
    manifests: ManifestsOption = None,
    root: RootOption = None,
) -> None:
    """Hash the dataset's anomalous AND normal images into manifests/eval_hashes/<dataset>.txt."""
    from daad.registry.catalogue import Catalogue
    from daad.registry.exclusion import EvaluationHashes
    from daad.loaders import get_loader
    from daad.loaders.base import Skipped
    from daad.record import Record

    registry = open_registry(manifests, root)
    registry.rules.rule(dataset)  # only datasets with a rule
    loader = get_loader(dataset)
    root = registry.roots[dataset].resolve()
    images = []
    for item in loader.iter_records(root, Catalogue.load(registry.manifests_dir)[dataset]):
        if isinstance(item, Record) and item.image.path is not None:
            images.append((item.id, root / item.image.path))
        elif isinstance(item, Skipped) and item.path is not None and item.path.suffix.lower() in IMAGE_SUFFIXES:
            images.append((item.id, item.path))  # an evaluation image even without a usable mask
    images += [(normal.id, normal.path) for normal in loader.iter_normals(root)]
    stored = EvaluationHashes.of_images(images, progress=output.progress)
    path = registry.rules.hashes_path(dataset)
    stored.write(path, f"Perceptual hashes of {dataset} ({len(images)} images, anomalous and normal):\n"
                       f"written by `daad exclusions hash {dataset}`; lines: <16 variant pHashes: 8 dihedral "
                       f"transforms, whole then cropped> <fine signature> <image id>.")
    console.print(f"{len(stored.hashes)} hashes of {len(images)} images -> {path}")
    if output.json:
        print_json({"dataset": dataset, "images": len(images), "hashes": len(stored.hashes), "path": str(path)})
