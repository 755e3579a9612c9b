"""``daad synth cdm train|sample``: CDM, the CAI-guided diffusion mechanism."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import ManifestsOption, QuietOption, RootOption, console, open_registry, synth_app
from daad.cli.synth import RayOption, RembgOption, SizeOption, TargetOriginOption, TargetSplitOption, TargetsOption, resolve_targets

cdm_app = typer.Typer(help="CDM: learn anomaly classes from CAI output, then sample new ones.", no_args_is_help=True)
synth_app.add_typer(cdm_app, name="cdm")

ClassesOption = Annotated[
    list[str] | None, typer.Option("--class", help="Only these anomaly classes (repeatable; default: all present).")
]
SeedOption = Annotated[int, typer.Option()]
DeviceOption = Annotated[str | None, typer.Option(help="torch device (default: CUDA when available).")]
MixedPrecisionOption = Annotated[
    str, typer.Option(help="auto (bf16/fp16 on CUDA, none on CPU), no, fp16 or bf16: autocast, frozen weights in that dtype.")
]
PrecisionOption = Annotated[str, typer.Option(help="Sampling dtype: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")]
ForegroundOption = Annotated[str, typer.Option(help="auto (rembg when a model is given, else Otsu, with a warning), rembg, classical or full.")]


@cdm_app.command("train")
def train(
    data: Annotated[Path, typer.Option("--data", help="CAI output folder (daad synth cai --out).")],
    base_model: Annotated[str, typer.Option("--base-model", help="Local diffusers SD-1.5-style folder or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder.")],
    classes: ClassesOption = None,
    resolution: Annotated[int, typer.Option(help="Training resolution (square, multiple of 8; paper: 256).")] = 256,
    steps: Annotated[int, typer.Option()] = 3000,
    learning_rate: Annotated[float, typer.Option("--lr")] = 5e-3,
    batch_size: Annotated[int, typer.Option()] = 4,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps.")] = 500,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    background_weight: Annotated[float, typer.Option(help="Loss weight outside the mask (0: mask only).")] = 0.0,
    seed: SeedOption = 0,
    mixed_precision: MixedPrecisionOption = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute UNet activations in backward (less memory).")] = False,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm (0: off, as textual inversion).")] = 0.0,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Learn per anomaly class an anomaly token (masked textual inversion, with the spatial-aware
    embedding of its mask) and a mask token (the learnt mask generator), and the fallback mask bank."""
    from daad.synthesis.cdm.train import TrainConfig
    from daad.synthesis.cdm.train import train as run

    config = TrainConfig(
        data=data, base_model=base_model, output=out, classes=tuple(classes) if classes else None,
        resolution=resolution, steps=steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
        max_grad_norm=max_grad_norm or None, checkpoint_every=checkpoint_every, resume=resume,
        background_weight=background_weight, foreground=foreground, rembg_model=rembg_model, device=device,
    )
    result = run(config, progress=not quiet)
    console.print(f"cdm: {len(result.losses)} steps, last loss {result.losses[-1]:.4f}, "
                  f"fingerprint {result.fingerprint[:12]} -> {out}")


@cdm_app.command("sample")
def sample(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Folder written by `daad synth cdm train`.")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder.")],
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    classes: ClassesOption = None,
    per_target: Annotated[int, typer.Option(help="Pseudo-anomalies per target image.")] = 10,
    steps: Annotated[int, typer.Option(help="Denoising steps (DDIM).")] = 50,
    guidance_scale: Annotated[float, typer.Option()] = 7.5,
    batch_size: Annotated[int, typer.Option()] = 8,
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
    quiet: QuietOption = False,
    ray: RayOption = None,
) -> None:
    """A new mask inside each target's foreground, the class's anomaly generated inside it."""
    from daad.synthesis.cdm.sample import CDM, MASK_GENERATORS, SampleConfig, input_licences
    from daad.synthesis.output import write_generated

    if mask_generator not in MASK_GENERATORS:
        raise typer.BadParameter(f"expected one of {', '.join(MASK_GENERATORS)}", param_hint="--mask-generator")
    generator = CDM(SampleConfig(
        checkpoint=checkpoint, per_target=per_target, classes=tuple(classes) if classes else None, steps=steps,
        guidance_scale=guidance_scale, batch_size=batch_size, dilate=dilate, mask_generator=mask_generator,
        foreground=foreground, rembg_model=rembg_model, precision=precision, device=device,
    ))
    registry = open_registry(manifests, root) if target_origin else None
    target_list = resolve_targets(registry, targets, target_origin, size, target_split, lazy=ray is not None)
    if ray is not None:
        from daad.distributed.cluster import connected
        from daad.distributed.sampling import sample_cdm_on_ray

        with connected(ray) as session:
            done = sample_cdm_on_ray(session, generator.config, target_list, out, seed=seed, size=size, progress=not quiet)
        console.print(f"cdm: {done.summary.rows} rows from {len(target_list)} targets -> {out} "
                      f"(Ray, {done.blocks} block{'s' * (done.blocks != 1)})")
        return
    summary = write_generated(
        out, generator.generate(target_list, None, seed), generator=generator.name,
        params=generator.params() | {"size": size}, seed=seed,
        evaluation=generator.info["trained_on"]["evaluation"] or "none",
        input_licences=input_licences(generator, target_list), progress=not quiet,
        total=len(target_list) * per_target,
    )
    console.print(f"cdm: {summary.rows} rows from {len(target_list)} targets -> {out}")
