"""``daad synth dualanodiff train|sample``: DualAnoDiff, anomaly image + anomaly part in one diffusion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import ManifestsOption, QuietOption, RootOption, console, open_registry, synth_app
from daad.cli.synth import ForegroundOption, RayOption, RembgOption, SizeOption, TargetOriginOption, TargetSplitOption, TargetsOption, resolve_targets

dualanodiff_app = typer.Typer(
    help="DualAnoDiff: train on anomaly image-mask pairs, then sample aligned image-mask pairs.", no_args_is_help=True
)
synth_app.add_typer(dualanodiff_app, name="dualanodiff")

DeviceOption = Annotated[str | None, typer.Option(help="torch device (default: CUDA when available).")]
MixedPrecisionOption = Annotated[
    str, typer.Option(help="auto (bf16/fp16 on CUDA, none on CPU), no, fp16 or bf16: autocast, frozen weights in that dtype.")
]
PrecisionOption = Annotated[str, typer.Option(help="Sampling dtype: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")]
BaseModelOption = Annotated[str | None, typer.Option("--base-model", help="Local diffusers SD-1.5-style folder or hub id.")]


@dualanodiff_app.command("train")
def train(
    base_model: Annotated[str, typer.Option("--base-model", help="Local diffusers SD-1.5-style folder or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder.")],
    anomaly_class: Annotated[str | None, typer.Option("--class", help="Anomaly class of the registry records.")] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="Registry origin (the few-shot domain).")] = None,
    evaluation: Annotated[str, typer.Option("--eval", help="Evaluation dataset the view is guarded for ('none').")] = "none",
    split: Annotated[
        str, typer.Option(help="'first-third': few-shot on --origin's first third of each defect type; 'all'.")
    ] = "all",
    from_generated: Annotated[
        Path | None,
        typer.Option("--from-generated", help="Train on a generated dataset folder (e.g. CAI output); --class picks its rows."),
    ] = None,
    resolution: Annotated[int, typer.Option(help="Training resolution (square, multiple of 8).")] = 512,
    steps: Annotated[int, typer.Option()] = 5000,
    batch_size: Annotated[int, typer.Option()] = 4,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-5,
    rank: Annotated[int, typer.Option(help="LoRA rank of each branch.")] = 32,
    saim: Annotated[bool, typer.Option(help="Self-attention interaction between the branches.")] = True,
    bcm: Annotated[bool, typer.Option(help="Background compensation.")] = True,
    gamma_init: Annotated[float, typer.Option(help="Initial BCM gamma (paper 0.1; 0 starts as a no-op).")] = 0.1,
    train_text_encoder: Annotated[bool, typer.Option(help="Also train a LoRA on the text encoder (the paper's τθ).")] = True,
    whole_prompt: Annotated[str, typer.Option()] = "a vfx with sks",
    part_prompt: Annotated[str, typer.Option()] = "sks",
    flip: Annotated[bool, typer.Option(help="Random horizontal and vertical flips.")] = True,
    mixed_precision: MixedPrecisionOption = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute UNet activations in backward (less memory).")] = False,
    max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm (authors: 1.0; 0: off).")] = 1.0,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps.")] = 500,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    manifests: ManifestsOption = None,
    root: RootOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train one model on the pairs of one (domain, defect) or one class of cross-domain pairs."""
    from daad.synthesis.diffusion import MIXED_PRECISION
    from daad.synthesis.dualanodiff.checkpoint import Prompts
    from daad.synthesis.dualanodiff.data import FewShotSplit, pairs_from_generated, pairs_from_view, registry_licences
    from daad.synthesis.dualanodiff.train import TrainConfig
    from daad.synthesis.dualanodiff.train import train as run_training

    if mixed_precision not in MIXED_PRECISION:
        raise typer.BadParameter(f"expected one of {', '.join(MIXED_PRECISION)}", param_hint="--mixed-precision")
    few_shot = None
    if from_generated is not None:
        registry = open_registry(manifests, root)
        pairs = pairs_from_generated(from_generated, anomaly_class, lambda ids: registry_licences(registry, ids))
    else:
        if anomaly_class is None:
            raise typer.BadParameter("give --class (or --from-generated)")
        registry = open_registry(manifests, root)
        if split == "first-third":
            if origin is None:
                raise typer.BadParameter("--split first-third needs the few-shot --origin", param_hint="--split")
            # few-shot on an evaluation dataset: its records are read, and only the held-out
            # two thirds are what the output is leak-free for (recorded with the checkpoint)
            view = registry.view(evaluation="none", classes=[anomaly_class], origins=[origin])
            few_shot = FewShotSplit.first_third(view, evaluation=origin)
        elif split == "all":
            view = registry.view(evaluation=evaluation, classes=[anomaly_class], origins=[origin] if origin else None)
        else:
            raise typer.BadParameter(f"expected first-third or all, got {split!r}", param_hint="--split")
        pairs = pairs_from_view(view, few_shot)
    config = TrainConfig(
        base_model=base_model,
        output_dir=out,
        resolution=resolution,
        max_train_steps=steps,
        train_batch_size=batch_size,
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
        checkpointing_steps=checkpoint_every,
        resume=resume,
        foreground=foreground,
        rembg_model=rembg_model,
        device=device,
        progress=not quiet,
    )
    result = run_training(config, pairs, few_shot)
    console.print(
        f"trained {result.step} steps on {len(pairs)} pairs -> {result.output_dir} "
        f"(fingerprint {result.fingerprint[:16]}…, last loss {result.losses[-1] if result.losses else float('nan'):.4f})"
    )


@dualanodiff_app.command("sample")
def sample(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A folder written by `dualanodiff train`.")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder.")],
    num_pairs: Annotated[int, typer.Option(help="Image-mask pairs to sample.")] = 500,
    steps: Annotated[int, typer.Option(help="DDIM steps (paper: 100; 50 with BCM).")] = 100,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance (paper: 2.5; 2.0 with BCM).")] = 2.5,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch.")] = 4,
    targets: TargetsOption = None,
    target_origin: TargetOriginOption = None,
    target_split: TargetSplitOption = "train",
    size: SizeOption = 512,
    mask_method: Annotated[str, typer.Option(help="threshold or rembg (on the part image).")] = "threshold",
    mask_threshold: Annotated[int, typer.Option(help="Difference from the part's neutral background (0-255).")] = 24,
    evaluation: Annotated[
        str | None, typer.Option("--eval", help="Evaluation dataset (default: the checkpoint's few-shot split, or none).")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    base_model: BaseModelOption = None,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = "auto",
    manifests: ManifestsOption = None,
    root: RootOption = None,
    quiet: QuietOption = False,
    ray: RayOption = None,
) -> None:
    """Sample pairs; with --targets/--target-origin their backgrounds condition BCM."""
    from daad.synthesis.diffusion import SAMPLING_PRECISION
    from daad.synthesis.dualanodiff.checkpoint import read_info
    from daad.synthesis.dualanodiff.sample import SampleConfig
    from daad.synthesis.dualanodiff.sample import sample as run_sampling

    if precision not in SAMPLING_PRECISION:
        raise typer.BadParameter(f"expected one of {', '.join(SAMPLING_PRECISION)}", param_hint="--precision")
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
        progress=not quiet,
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
