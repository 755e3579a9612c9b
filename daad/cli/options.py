"""The CLI's vocabulary, declared once: every option more than one command takes, with one
name and one meaning, and the checks that refuse a value no command could use.

``--json`` and ``--quiet`` are not here: the group adds them to every command
(:class:`daad.cli.app.DaadGroup`), and commands read them from :data:`daad.cli.app.output`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

ManifestsOption = Annotated[
    Path | None,
    typer.Option("--manifests", help="Manifest folder (default: $DAAD_MANIFESTS, else the registry shipped with daad)."),
]
RootOption = Annotated[
    list[str] | None,
    typer.Option("--root", help="ORIGIN=PATH, where an origin's files live (repeatable); "
                 "else $DAAD_ROOT_<ORIGIN>, else the data dir."),
]
OriginsOption = Annotated[list[str] | None, typer.Option("--origin", help="Only these origins (repeatable).")]
EvalOption = Annotated[
    str, typer.Option("--eval", help="The evaluation dataset the output must not leak into, e.g. kolektorsdd "
                      "('none' to state there is none).")
]
RayOption = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS",
    help="Run on Ray: 'local' (start or attach to Ray on this machine) or a cluster's HOST:PORT; the output is "
    "the same bytes, and a rerun after a lost driver makes only what is missing.")]
ClassesOption = Annotated[
    list[str] | None, typer.Option("--classes", help="Only these anomaly classes (comma-separated or repeated).")
]
SizeOption = Annotated[int, typer.Option("--size", help="Working resolution (square); 0 keeps native size.")]
WorkersOption = Annotated[
    int, typer.Option("--workers", help="Worker processes (0: one per CPU); the output is the same for any number.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
OutOption = Annotated[Path, typer.Option("--out", help="Output dataset folder.")]
TargetsOption = Annotated[Path | None, typer.Option("--targets", help="Folder of target normal images.")]
TargetOriginOption = Annotated[
    str | None, typer.Option("--target-origin", help="Use this origin's normal images (its root from --root).")
]
TargetSplitOption = Annotated[
    str,
    typer.Option(
        "--target-split",
        help="With --target-origin naming an evaluation dataset: 'train' (its training normals; its test "
        "normals never become targets) or 'all'.",
    ),
]
PerTargetOption = Annotated[int, typer.Option("--per-target", help="Pseudo-anomalies per target image.")]
ForegroundOption = Annotated[
    str, typer.Option("--foreground", help="auto (rembg when a model is given, else Otsu, with a warning), "
                      "rembg, classical or full.")
]
RembgOption = Annotated[
    Path | None, typer.Option("--rembg-model", help="Local U²-Net .onnx file (or DAAD_REMBG_MODEL); never downloaded.")
]

# diffusion training and sampling (CDM and DualAnoDiff name their settings alike)
BaseModelOption = Annotated[str, typer.Option("--base-model", help="Local diffusers SD-1.5-style folder or hub id.")]
CheckpointOutOption = Annotated[Path, typer.Option("--out", help="Checkpoint folder.")]
CheckpointOption = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint folder written by `train`.")]
TrainStepsOption = Annotated[int, typer.Option("--steps", help="Training steps.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Images per step.")]
LearningRateOption = Annotated[float, typer.Option("--lr", help="Learning rate.")]
CheckpointEveryOption = Annotated[int, typer.Option("--checkpoint-every", help="Save a resumable checkpoint every N steps.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")]
MixedPrecisionOption = Annotated[
    str, typer.Option("--mixed-precision", help="auto (bf16/fp16 on CUDA, none on CPU), no, fp16 or bf16: "
                      "autocast, frozen weights in that dtype.")
]
GradientCheckpointingOption = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Recompute UNet activations in backward (less memory).")
]
DeviceOption = Annotated[str | None, typer.Option("--device", help="torch device (default: CUDA when available).")]
InferenceStepsOption = Annotated[int, typer.Option("--inference-steps", help="Denoising (DDIM) steps.")]
GuidanceScaleOption = Annotated[float, typer.Option("--guidance-scale", help="Classifier-free guidance scale.")]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="Sampling dtype: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")
]


def split_values(values: Iterable[str] | None) -> list[str] | None:
    """Repeated and comma-separated values as one list (``None`` when none were given)."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()] or None


def check_values(values: Iterable[str] | None, valid: Iterable[str], option: str) -> None:
    """Refuse (a usage error naming the valid values) any of ``values`` not in ``valid``."""
    valid = sorted(set(valid))
    unknown = sorted(set(values or ()) - set(valid))
    if unknown:
        raise typer.BadParameter(f"unknown value(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}",
                                 param_hint=option)


def checked_classes(values: Iterable[str] | None) -> list[str] | None:
    """``--classes``: split, and refused unless each is one of the eight anomaly classes."""
    from daad.taxonomy import ANOMALY_CLASSES

    classes = split_values(values)
    check_values(classes, ANOMALY_CLASSES, "--classes")
    return classes


def checked_origins(registry, values: list[str] | None) -> list[str] | None:
    """``--origin``: refused unless each is an origin the registry knows (catalogue, collection or manifest)."""
    if not values:
        return values
    from daad.registry.catalogue import CatalogueError

    known = {p.stem for p in registry.manifests()}
    try:
        known |= {e.id for e in registry.catalogue}
    except CatalogueError:  # a bare folder of manifests: its manifests are its origins
        pass
    check_values(values, known, "--origin")
    return values


def checked_statuses(values: Iterable[str] | None, *, also: tuple[str, ...] = ()) -> None:
    """``--status``: refused unless each is a curation state (or one of ``also``, e.g. ``all``)."""
    from daad.taxonomy import Status

    check_values(values, [str(s) for s in Status] + list(also), "--status")
