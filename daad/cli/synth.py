"""``daad synth <generator>``: pseudo-anomalies for a target domain, written as HF dataset folders.

``cai`` (CAI-N / CAI-M) and the baselines ``cutpaste``, ``nsa`` and ``draem`` share the
target, evaluation, output, seed and preview options. With ``--mode both`` (or
``--variant both``) each generator writes its own sub-folder ``OUT/<generator>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import console, open_registry, output, print_json, synth_app
from daad.cli.options import (
    ClassesOption, EvalOption, ForegroundOption, ManifestsOption, OutOption, PerTargetOption, RayOption, RembgOption, RootOption,
    SeedOption, SizeOption, TargetOriginOption, TargetSplitOption, TargetsOption, WorkersOption, check_values,
    checked_classes,
)

PreviewOption = Annotated[Path | None, typer.Option(
    "--preview", help="Write a labelled contact sheet PNG of rows sampled across targets and classes.")]
SolverOption = Annotated[
    str, typer.Option("--solver", help="Poisson solver: dst (fast) or opencv (cv2.seamlessClone); within one grey level.")
]
PREVIEW_ROWS = 12


def resolve_targets(
    registry, targets: Path | None, target_origin: str | None, size: int, split: str = "train", lazy: bool = False
) -> list:
    """The target normals: a folder's images, or an origin's normals (only its training
    normals when the origin is an evaluation dataset and ``split`` is ``train``); with
    ``lazy``, their files (:class:`~daad.synthesis.targets.TargetFiles`), read where they are used."""
    from daad.evaluation.sets import LOADER_SETS, normal_split
    from daad.synthesis.targets import TargetFiles, folder_items, load_targets, origin_items

    if (targets is None) == (target_origin is None):
        raise typer.BadParameter("give exactly one of --targets FOLDER or --target-origin ORIGIN")
    check_values([split], ("train", "all"), "--target-split")
    if targets is not None:
        items, licence = folder_items(targets), "unknown"
    else:
        root = registry.roots[target_origin]
        items = origin_items(target_origin, root)
        if split == "train" and target_origin in LOADER_SETS:
            train, _ = normal_split(target_origin, root)
            items = [item for item in items if item[0] in train]
        licence = registry.catalogue[target_origin].licence if target_origin in registry.catalogue else "unknown"
    if not items:
        raise typer.BadParameter("no target images found")
    if lazy:
        return TargetFiles(items, size or None, licence)
    return list(load_targets(items, size or None, licence))


def source_view(registry, evaluation: str, classes: list[str] | None):
    """The leak-free view of the real anomalies whose files are here: origins with neither a
    root nor URL images are left out, and named (``daad download`` or ``--root`` brings them)."""
    absent = [
        p.stem for p in registry.manifests()
        if registry.roots.get(p.stem) is None and any(r.image.path is not None for r in registry.records([p.stem]))
    ]
    if absent:
        console.print(f"[yellow]left out, no local files: {', '.join(absent)} "
                      f"(`daad download --origin NAME`, or --root NAME=PATH)[/]")
    present = [p.stem for p in registry.manifests() if p.stem not in absent]
    if not present:
        raise typer.BadParameter("no origin of the registry has its files here: pass --root ORIGIN=PATH or run `daad download`")
    return registry.view(evaluation=evaluation, classes=classes, origins=present)


def _modes(mode: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    if mode == "both":
        return choices
    if mode not in choices:
        raise typer.BadParameter(f"expected one of {', '.join(choices)} or both, got {mode!r}")
    return (mode,)


def _write(generator, dest: Path, *, targets: list, seed: int, workers: int, evaluation: str,
           licences: dict[str, str], preview: Path | None, params: dict, ray: str | None = None) -> None:
    """Generate (in ``workers`` processes, or on Ray), stream the rows into ``dest`` (keeping the
    first few for the preview; on Ray, read back from the shards) and print a summary."""
    if ray is not None:
        from daad.distributed.cluster import connected
        from daad.distributed.synthesis import synthesise_on_ray

        with connected(ray) as session:
            done = synthesise_on_ray(
                session, generator, targets, dest, seed=seed, params=generator.params() | params,
                evaluation=evaluation, input_licences=licences, progress=output.progress,
            )
        resumed = f", {done.blocks - done.blocks_made} found made by an earlier run" if done.blocks_made < done.blocks else ""
        console.print(f"{generator.name}: {done.summary.rows} rows from {len(targets)} targets -> {dest} "
                      f"(Ray, {done.blocks} block{'s' * (done.blocks != 1)}{resumed})")
        for line in generator.report.lines(getattr(generator.config, "max_tries", 0)):
            console.print(f"[yellow]{generator.name}: {line}[/]")
        if preview is not None:
            from daad.distributed.preview import preview_written

            console.print(f"preview: {preview_written(dest, targets, PREVIEW_ROWS, preview)}")
        return
    from daad.synthesis.output import write_generated
    from daad.processes import default_workers
    from daad.synthesis.parallel import generate_encoded
    from daad.synthesis.preview import PreviewSampler, contact_sheet

    total = len(targets) * params["per_target"]
    sampler = PreviewSampler(PREVIEW_ROWS if preview is not None else 0, total)

    def tee():
        for row in generate_encoded(generator, targets, seed, workers or default_workers()):
            if preview is not None:
                sampler.offer(row)
            yield row

    summary = write_generated(
        dest, tee(), generator=generator.name, params=generator.params() | params, seed=seed,
        evaluation=evaluation, input_licences=licences | {t.id: t.licence for t in targets},
        progress=output.progress, total=total,
    )
    sheet = contact_sheet(sampler.kept, {t.id: t for t in targets}, preview) if preview is not None else None
    console.print(f"{generator.name}: {summary.rows} rows from {len(targets)} targets -> {dest}")
    for line in generator.report.lines(getattr(generator.config, "max_tries", 0)):
        console.print(f"[yellow]{generator.name}: {line}[/]")
    if sheet is not None:
        console.print(f"preview: {sheet}")
    if output.json:
        print_json({"generator": generator.name, "rows": summary.rows, "targets": len(targets), "out": str(dest),
                    "preview": str(sheet) if sheet else None})


def _check_solver(solver: str) -> None:
    """``--solver`` as CAI and NSA check it (``BadParameter`` otherwise)."""
    from daad.synthesis.injection import check_blend

    try:
        check_blend("normal", solver)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--solver") from None


def _dest(out: Path, preview: Path | None, name: str, several: bool) -> tuple[Path, Path | None]:
    if not several:
        return out, preview
    return out / name, preview.with_name(f"{preview.stem}-{name}{preview.suffix}") if preview else None


@synth_app.command("cai")
def cai(
    out: OutOption,
    eval_: EvalOption,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    classes: ClassesOption = None,
    per_target: PerTargetOption = 10,
    ratios: Annotated[str, typer.Option("--ratios", help="large:medium:small mix.")] = "4:3:3",
    mode: Annotated[str, typer.Option("--mode", help="normal, mixed or both.")] = "normal",
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    size: SizeOption = 256,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    solver: SolverOption = "dst",
    mask_rule: Annotated[str, typer.Option(
        "--mask-rule", help="pattern (the difference on the placed pattern) or paper (Eq. 4 over the clone box).")] = "pattern",
    preview: PreviewOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """CAI: inject real anomalies from other domains with Poisson editing (CAI-N / CAI-M)."""
    from daad.synthesis.cai import CAI, CAIConfig, PatternBank
    from daad.synthesis.foreground import ForegroundExtractor

    try:
        ratio = tuple(int(x) for x in ratios.split(":"))
        CAIConfig(ratios=ratio)
    except ValueError:
        raise typer.BadParameter("--ratios expects three integers like 4:3:3") from None
    from daad.synthesis.injection import MASK_RULES

    check_values([mask_rule], MASK_RULES, "--mask-rule")
    _check_solver(solver)
    registry = open_registry(manifests, root)
    view = source_view(registry, eval_, checked_classes(classes))
    target_list = resolve_targets(registry, targets, target_origin, size, target_split, lazy=ray is not None)
    bank = PatternBank.from_view(view)
    licences = {p.id: p.licence for p in bank.patterns}
    fg = ForegroundExtractor(foreground, rembg_model)
    modes = _modes(mode, ("normal", "mixed"))
    for m in modes:
        generator = CAI(CAIConfig(mode=m, per_target=per_target, ratios=ratio, solver=solver, mask_rule=mask_rule), fg, bank)
        dest, sheet = _dest(out, preview, generator.name, len(modes) > 1)
        _write(generator, dest, targets=target_list, seed=seed, workers=workers, evaluation=eval_,
               licences=licences, preview=sheet, ray=ray,
               params={"view": view.describe(), "size": size, "per_target": per_target, "sources": len(bank)})


@synth_app.command("cutpaste")
def cutpaste(
    out: OutOption,
    eval_: EvalOption,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    per_target: PerTargetOption = 10,
    variant: Annotated[str, typer.Option("--variant", help="normal, scar or both.")] = "normal",
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    size: SizeOption = 256,
    preview: PreviewOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """CutPaste (and CutPaste-scar): patches of the target image itself; uses no registry record."""
    from daad.synthesis.baselines.cutpaste import CutPaste, CutPasteConfig

    target_list = resolve_targets(open_registry(manifests, root), targets, target_origin, size, target_split, lazy=ray is not None)
    variants = _modes(variant, ("normal", "scar"))
    for v in variants:
        generator = CutPaste(CutPasteConfig(scar=v == "scar", per_target=per_target))
        dest, sheet = _dest(out, preview, generator.name, len(variants) > 1)
        _write(generator, dest, targets=target_list, seed=seed, workers=workers, evaluation=eval_,
               licences={}, preview=sheet, ray=ray,
               params={"size": size, "per_target": per_target})


@synth_app.command("nsa")
def nsa(
    out: OutOption,
    eval_: EvalOption,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    per_target: PerTargetOption = 10,
    mode: Annotated[str, typer.Option("--mode", help="normal, mixed or both.")] = "normal",
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    size: SizeOption = 256,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    solver: SolverOption = "dst",
    preview: PreviewOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """NSA: Poisson-blended patches of other normal images of the target domain."""
    from daad.synthesis.baselines.nsa import NSA, NSAConfig
    from daad.synthesis.foreground import ForegroundExtractor

    _check_solver(solver)
    target_list = resolve_targets(open_registry(manifests, root), targets, target_origin, size, target_split, lazy=ray is not None)
    fg = ForegroundExtractor(foreground, rembg_model)
    modes = _modes(mode, ("normal", "mixed"))
    for m in modes:
        generator = NSA(NSAConfig(mode=m, per_target=per_target, solver=solver), fg)
        dest, sheet = _dest(out, preview, generator.name, len(modes) > 1)
        _write(generator, dest, targets=target_list, seed=seed, workers=workers, evaluation=eval_,
               licences={}, preview=sheet, ray=ray,
               params={"size": size, "per_target": per_target})


@synth_app.command("draem")
def draem(
    out: OutOption,
    eval_: EvalOption,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    textures: Annotated[
        Path | None, typer.Option("--textures", help="Folder of texture images (e.g. DTD); default: registry images.")
    ] = None,
    classes: ClassesOption = None,
    per_target: PerTargetOption = 10,
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    size: SizeOption = 256,
    preview: PreviewOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """DRAEM-style: Perlin-noise masks filled with a blended texture image."""
    from daad.synthesis.baselines.draem import DRAEM, DRAEMConfig, folder_textures

    registry = open_registry(manifests, root)
    target_list = resolve_targets(registry, targets, target_origin, size, target_split, lazy=ray is not None)
    view = source_view(registry, eval_, checked_classes(classes))
    generator = DRAEM(DRAEMConfig(per_target=per_target), folder_textures(textures) if textures else None)
    generator.prepare(view)
    licences = {} if textures else {r.id: r.licence for r in view}
    _write(generator, out, targets=target_list, seed=seed, workers=workers, evaluation=eval_,
           licences=licences, preview=preview, ray=ray,
           params={"size": size, "per_target": per_target, "view": view.describe()})
