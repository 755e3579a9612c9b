"""``daad synth dualanodiff train|sample``: DualAnoDiff, anomaly image + anomaly part in one diffusion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import console, open_registry, output, print_json, synth_app
from daad.cli.options import (
    BaseModelOption, BatchSizeOption, CheckpointEveryOption, CheckpointOption, CheckpointOutOption, ClassesOption,
    DeviceOption, EvalOption, ForegroundOption, GradientCheckpointingOption, GuidanceScaleOption,
    InferenceStepsOption, LearningRateOption, ManifestsOption, MixedPrecisionOption, OutOption, PrecisionOption,
    RembgOption, ResumeOption, RootOption, SeedOption, SizeOption, TargetOriginOption, TargetSplitOption,
    RayOption, TargetsOption, TrainStepsOption, check_values, checked_classes,
)
from daad.cli.synth import resolve_targets

dualanodiff_app = typer.Typer(
    help="DualAnoDiff: train on anomaly image-mask pairs, then sample aligned image-mask pairs.", no_args_is_help=True
)
synth_app.add_typer(dualanodiff_app, name="dualanodiff")


@dualanodiff_app.command("train")
def train(
    base_model: BaseModelOption,
    out: CheckpointOutOption,
    classes: ClassesOption = None,
    origin: Annotated[str | None, typer.Option("--origin", help="Registry origin (the few-shot domain).")] = None,
    evaluation: EvalOption = None,  # required where registry records are read (below)
    split: Annotated[
        str, typer.Option(help="'first-third': few-shot on --origin's first third of each defect type; 'all'.")
    ] = "all",
    from_generated: Annotated[
        Path | None,
        typer.Option("--from-generated", help="Train on a generated dataset folder (e.g. CAI output); --classes picks its rows."),
    ] = None,
    size: SizeOption = 512,
    steps: TrainStepsOption = 5000,
    batch_size: BatchSizeOption = 4,
    learning_rate: LearningRateOption = 2e-5,
    rank: Annotated[int, typer.Option(help="LoRA rank of each branch.")] = 32,
    saim: Annotated[bool, typer.Option(help="Self-attention interaction between the branches.")] = True,
    bcm: Annotated[bool, typer.Option(help="Background compensation.")] = True,
    gamma_init: Annotated[float, typer.Option(help="Initial BCM gamma (paper 0.1; 0 starts as a no-op).")] = 0.1,
    train_text_encoder: Annotated[bool, typer.Option(help="Also train a LoRA on the text encoder (the paper's τθ).")] = True,
    whole_prompt: Annotated[str, typer.Option()] = "a vfx with sks",
    part_prompt: Annotated[str, typer.Option()] = "sks",
    flip: Annotated[bool, typer.Option(help="Random horizontal and vertical flips.")] = True,
    mixed_precision: MixedPrecisionOption = "auto",
    gradient_checkpointing: GradientCheckpointingOption = False,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm (authors: 1.0; 0: off).")] = 1.0,
    checkpoint_every: CheckpointEveryOption = 500,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
) -> None:
    """Train one model on the pairs of one (domain, defect) or one class of cross-domain pairs."""
    from daad.synthesis.diffusion import MIXED_PRECISION
    from daad.synthesis.dualanodiff.checkpoint import Prompts
    from daad.synthesis.dualanodiff.data import FewShotSplit, pairs_from_generated, pairs_from_view, registry_licences
    from daad.synthesis.dualanodiff.train import TrainConfig
    from daad.synthesis.dualanodiff.train import train as run_training

    check_values([mixed_precision], MIXED_PRECISION, "--mixed-precision")
    chosen = checked_classes(classes) or []
    if len(chosen) > 1:
        raise typer.BadParameter(f"one model per anomaly class: give one, not {', '.join(chosen)}", param_hint="--classes")
    anomaly_class = chosen[0] if chosen else None
    few_shot = None
    if from_generated is not None:
        registry = open_registry(manifests, root)
        pairs = pairs_from_generated(from_generated, anomaly_class, lambda ids: registry_licences(registry, ids))
    else:
        if anomaly_class is None:
            raise typer.BadParameter("give --classes CLASS (or --from-generated)")
        registry = open_registry(manifests, root)
        if split == "first-third":
            if origin is None:
                raise typer.BadParameter("--split first-third needs the few-shot --origin", param_hint="--split")
            # few-shot on an evaluation dataset: its records are read, and only the held-out
            # two thirds are what the output is leak-free for (recorded with the checkpoint)
            view = registry.view(evaluation="none", classes=[anomaly_class], origins=[origin])
            few_shot = FewShotSplit.first_third(view, evaluation=origin)
        elif split == "all":
            if evaluation is None:
                raise typer.BadParameter("name the evaluation dataset the model's output must not leak into "
                                         "(or 'none')", param_hint="--eval")
            view = registry.view(evaluation=evaluation, classes=[anomaly_class], origins=[origin] if origin else None)
        else:
            raise typer.BadParameter(f"expected first-third or all, got {split!r}", param_hint="--split")
        pairs = pairs_from_view(view, few_shot)
    config = TrainConfig(
        base_model=base_model,
        output=out,
        resolution=size,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        rank=rank,
        saim=saim,
        bcm=bcm,
        gamma_init=gamma_init,
        train_text_encoder=train_text_encoder,
        prompts=Prompts(whole_prompt, part_prompt),
        flip=flip,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        max_grad_norm=max_grad_norm or None,
        seed=seed,
        checkpoint_every=checkpoint_every,
        resume=resume,
        foreground=foreground,
        rembg_model=rembg_model,
        device=device,
        progress=output.progress,
    )
    result = run_training(config, pairs, few_shot)
    console.print(
        f"trained {result.step} steps on {len(pairs)} pairs -> {result.output_dir} "
        f"(fingerprint {result.fingerprint[:16]}…, last loss {result.losses[-1] if result.losses else float('nan'):.4f})"
    )
    if output.json:
        print_json({"steps": result.step, "pairs": len(pairs), "out": str(result.output_dir),
                    "fingerprint": result.fingerprint, "last_loss": result.losses[-1] if result.losses else None})


@dualanodiff_app.command("sample")
def sample(
    checkpoint: CheckpointOption,
    out: OutOption,
    num_pairs: Annotated[int, typer.Option(help="Image-mask pairs to sample.")] = 500,
    steps: InferenceStepsOption = 100,
    guidance: GuidanceScaleOption = 2.5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per batch.")] = 4,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    size: SizeOption = 512,
    mask_method: Annotated[str, typer.Option(help="threshold or rembg (on the part image).")] = "threshold",
    mask_threshold: Annotated[int, typer.Option(help="Difference from the part's neutral background (0-255).")] = 24,
    evaluation: Annotated[
        str | None, typer.Option("--eval", help="Evaluation dataset (default: the checkpoint's few-shot split, or none).")
    ] = None,
    seed: SeedOption = 0,
    base_model: Annotated[str | None, typer.Option("--base-model", help="The base model, if not where training found it.")] = None,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = "auto",
    manifests: ManifestsOption = None,
    root: RootOption = None,
    ray: RayOption = None,
) -> None:
    """Sample pairs; with --targets/--target-origin their backgrounds condition BCM."""
    from daad.synthesis.diffusion import SAMPLING_PRECISION
    from daad.synthesis.dualanodiff.checkpoint import read_info
    from daad.synthesis.dualanodiff.sample import SampleConfig
    from daad.synthesis.dualanodiff.sample import sample as run_sampling

    check_values([precision], SAMPLING_PRECISION, "--precision")
    info = read_info(checkpoint)
    chosen = []
    if targets is not None or target_origin is not None:
        chosen = resolve_targets(
            open_registry(manifests, root), targets, target_origin, size, target_split, lazy=ray is not None
        )
    config = SampleConfig(
        checkpoint=checkpoint,
        output_dir=out,
        num_pairs=num_pairs,
        num_inference_steps=steps,
        guidance_scale=guidance,
        batch_size=batch_size,
        seed=seed,
        mask_method=mask_method,
        mask_threshold=mask_threshold,
        rembg_model=rembg_model,
        foreground=foreground,
        base_model=base_model,
        evaluation=evaluation or (info.split or {}).get("evaluation", "none"),
        device=device,
        precision=precision,
        progress=output.progress,
    )
    if ray is not None:
        from daad.distributed.cluster import connected
        from daad.distributed.sampling import sample_dualanodiff_on_ray

        with connected(ray) as session:
            done, skipped = sample_dualanodiff_on_ray(session, config, chosen or None)
        summary = done.summary
    else:
        summary, skipped = run_sampling(config, chosen)
    console.print(f"wrote {summary.rows} pairs to {out} ({skipped} skipped for an empty mask)")
    if output.json:
        print_json({"generator": "dualanodiff", "rows": summary.rows, "skipped": skipped, "out": str(out)})
