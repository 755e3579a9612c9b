"""``daad synth cdm train|sample``: CDM, the CAI-guided diffusion mechanism."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import console, open_registry, output, print_json, synth_app
from daad.cli.options import (
    BaseModelOption, BatchSizeOption, CheckpointEveryOption, CheckpointOption, CheckpointOutOption, ClassesOption,
    DeviceOption, ForegroundOption, GradientCheckpointingOption, GuidanceScaleOption, InferenceStepsOption,
    LearningRateOption, ManifestsOption, MixedPrecisionOption, OutOption, PerTargetOption, PrecisionOption,
    RembgOption, ResumeOption, RootOption, SeedOption, SizeOption, TargetOriginOption, TargetSplitOption,
    RayOption, TargetsOption, TrainStepsOption, check_values, checked_classes,
)
from daad.cli.synth import resolve_targets

cdm_app = typer.Typer(help="CDM: learn anomaly classes from CAI output, then sample new ones.", no_args_is_help=True)
synth_app.add_typer(cdm_app, name="cdm")


@cdm_app.command("train")
def train(
    data: Annotated[Path, typer.Option("--data", help="CAI output folder (daad synth cai --out).")],
    base_model: BaseModelOption,
    out: CheckpointOutOption,
    classes: ClassesOption = None,
    size: SizeOption = 256,
    steps: TrainStepsOption = 3000,
    learning_rate: LearningRateOption = 5e-3,
    batch_size: BatchSizeOption = 4,
    checkpoint_every: CheckpointEveryOption = 500,
    resume: ResumeOption = False,
    background_weight: Annotated[float, typer.Option(help="Loss weight outside the mask (0: mask only).")] = 0.0,
    seed: SeedOption = 0,
    mixed_precision: MixedPrecisionOption = "auto",
    gradient_checkpointing: GradientCheckpointingOption = False,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm (0: off, as textual inversion).")] = 0.0,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
) -> None:
    """Learn per anomaly class an anomaly token (masked textual inversion, with the spatial-aware
    embedding of its mask) and a mask token (the learnt mask generator), and the fallback mask bank."""
    from daad.synthesis.cdm.train import TrainConfig
    from daad.synthesis.cdm.train import train as run

    config = TrainConfig(
        data=data, base_model=base_model, output=out, classes=tuple(checked_classes(classes) or ()) or None,
        resolution=size, steps=steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
        max_grad_norm=max_grad_norm or None, checkpoint_every=checkpoint_every, resume=resume,
        background_weight=background_weight, foreground=foreground, rembg_model=rembg_model, device=device,
    )
    result = run(config, progress=output.progress)
    console.print(f"cdm: {len(result.losses)} steps, last loss {result.losses[-1]:.4f}, "
                  f"fingerprint {result.fingerprint[:12]} -> {out}")
    if output.json:
        print_json({"steps": len(result.losses), "last_loss": result.losses[-1], "fingerprint": result.fingerprint,
                    "out": str(out)})


@cdm_app.command("sample")
def sample(
    checkpoint: CheckpointOption,
    out: OutOption,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    classes: ClassesOption = None,
    per_target: PerTargetOption = 10,
    steps: InferenceStepsOption = 50,
    guidance_scale: GuidanceScaleOption = 7.5,
    batch_size: BatchSizeOption = 8,
    dilate: Annotated[int, typer.Option(help="Pixels the mask grows by for the generated region.")] = 3,
    mask_generator: Annotated[
        str, typer.Option(help="learnt (the mask diffusion model) or bank (fallback: CAI mask shapes recombined).")
    ] = "learnt",
    size: SizeOption = 256,
    seed: SeedOption = 0,
    precision: PrecisionOption = "auto",
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """A new mask inside each target's foreground, the class's anomaly generated inside it."""
    from daad.synthesis.cdm.sample import CDM, MASK_GENERATORS, SampleConfig, input_licences
    from daad.synthesis.output import write_generated

    check_values([mask_generator], MASK_GENERATORS, "--mask-generator")
    generator = CDM(SampleConfig(
        checkpoint=checkpoint, per_target=per_target, classes=tuple(checked_classes(classes) or ()) or None, steps=steps,
        guidance_scale=guidance_scale, batch_size=batch_size, dilate=dilate, mask_generator=mask_generator,
        foreground=foreground, rembg_model=rembg_model, precision=precision, device=device,
    ))
    registry = open_registry(manifests, root) if target_origin else None
    target_list = resolve_targets(registry, targets, target_origin, size, target_split, lazy=ray is not None)
    if ray is not None:
        from daad.distributed.cluster import connected
        from daad.distributed.sampling import sample_cdm_on_ray

        with connected(ray) as session:
            done = sample_cdm_on_ray(session, generator.config, target_list, out, seed=seed, size=size, progress=output.progress)
        console.print(f"cdm: {done.summary.rows} rows from {len(target_list)} targets -> {out} "
                      f"(Ray, {done.blocks} block{'s' * (done.blocks != 1)})")
        return
    summary = write_generated(
        out, generator.generate(target_list, None, seed), generator=generator.name,
        params=generator.params() | {"size": size}, seed=seed,
        evaluation=generator.info["trained_on"]["evaluation"] or "none",
        input_licences=input_licences(generator, target_list), progress=output.progress,
        total=len(target_list) * per_target,
    )
    console.print(f"cdm: {summary.rows} rows from {len(target_list)} targets -> {out}")
    if output.json:
        print_json({"generator": generator.name, "rows": summary.rows, "targets": len(target_list), "out": str(out)})
