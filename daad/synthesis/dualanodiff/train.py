"""Train DualAnoDiff on (anomaly image, mask) pairs, in the order of diffusers' train_dreambooth_lora.py.

1. arguments (:class:`TrainConfig`, the paper's and the authors' defaults: 512 px, 5000 steps,
   batch 4, lr 2e-5, rank 32, a trained text encoder τθ, gradient clipping at 1.0, random
   horizontal and vertical flips);
2. the base model loaded and frozen, the dual-branch processors installed and a LoRA
   injected into the text encoder (the only trainables, kept in float32); with mixed
   precision the frozen weights are cast to fp16/bf16 and every pass runs under autocast;
   with gradient checkpointing the UNet recomputes its blocks' activations in backward;
3. the data: I, I_a = I × M_a and I_b = (1 − M_f) × I, resized once;
4. the loop: both branches of a pair share a timestep and get independent noise, the
   background (BCM) gets fresh noise of the same timestep every step and is run first, the
   loss is the ε-MSE of both branches (Eq. 4/6); checkpoints every ``checkpoint_every``,
   resumable;
5. the final weights and their fingerprint saved in ``output``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from daad.synthesis.diffusion import (
    BaseModel,
    TrainingPrecision,
    load_base,
    mixed_precision_dtype,
    pick_device,
    torch_generator,
)
from daad.synthesis.dualanodiff.attention import BackgroundPass, DualConfig, install
from daad.synthesis.dualanodiff.checkpoint import (
    CheckpointInfo,
    Prompts,
    add_text_encoder_lora,
    load_weights,
    read_info,
    save_checkpoint,
)
from daad.synthesis.dualanodiff.data import FewShotSplit, TrainingPair, prepare, random_flips
from daad.synthesis.dualanodiff.pipeline import pair_embeddings
from daad.synthesis.foreground import ForegroundExtractor

OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
SCALER_FILE = "grad_scaler.pt"


@dataclass
class TrainConfig:
    base_model: str
    output: Path
    resolution: int = 512
    steps: int = 5000
    batch_size: int = 4
    learning_rate: float = 2e-5
    rank: int = 32
    saim: bool = True
    bcm: bool = True
    gamma_init: float = 0.1
    train_text_encoder: bool = True
    """Also train a peft LoRA (same rank) on the text encoder: the paper's trainable τθ."""
    prompts: Prompts = field(default_factory=Prompts)
    flip: bool = True
    """Random horizontal and (independently) vertical flips of each pair, as the authors."""
    mixed_precision: str = "auto"
    """``auto`` (bf16/fp16 on CUDA, none on CPU), ``no``, ``fp16`` or ``bf16``."""
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    """Clip the trainables' gradient norm (the authors' 1.0); None or 0: no clipping."""
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    foreground: str = "auto"
    rembg_model: Path | None = None
    device: str | None = None
    progress: bool = True


@dataclass
class TrainResult:
    output_dir: Path
    fingerprint: str
    step: int
    losses: list[float]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, if any."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*") if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return max(found)[1] if found else None


def _save_resumable(folder: Path, layers, info, text_encoder, optimizer, generator, precision) -> None:
    """A resumable checkpoint, written into ``<folder>.tmp`` and renamed: a crash never leaves a half one."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
    save_checkpoint(tmp, layers, info, text_encoder)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    torch.save(generator.get_state(), tmp / RNG_FILE)
    if precision.scaler is not None:
        torch.save(precision.state_dict(), tmp / SCALER_FILE)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)


def train(
    config: TrainConfig, pairs: Sequence[TrainingPair], split: FewShotSplit | None = None, base: BaseModel | None = None
) -> TrainResult:
    """Train on ``pairs`` and save to ``config.output``; ``base``: an already loaded base model to reuse."""
    # 1. models: frozen base (half precision under mixed precision), float32 trainables
    device = pick_device(config.device) if base is None else base.unet.device
    precision = TrainingPrecision(mixed_precision_dtype(config.mixed_precision, device), device, config.max_grad_norm)
    base = base or load_base(config.base_model, device=device, dtype=precision.dtype or torch.float32)
    if precision.dtype is not None:
        base.to(device, precision.dtype)
    if config.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    dual = DualConfig(rank=config.rank, saim=config.saim, bcm=config.bcm, gamma_init=config.gamma_init)
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, whatever ran before
        torch.manual_seed(config.seed)
        layers = install(base.unet, dual, dtype=torch.float32)
        trainable = list(layers.parameters())
        if config.train_text_encoder:
            trainable += add_text_encoder_lora(base.text_encoder, config.rank)
    layers.train()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    generator = torch_generator(config.seed)
    info = CheckpointInfo(
        base_model=base.source,
        dual=dual,
        prompts=config.prompts,
        resolution=config.resolution,
        anomaly_class=pairs[0].anomaly_class,
        training_ids=[p.id for p in pairs],
        source_ids=sorted({s for p in pairs for s in p.source_ids}),
        licences={s: lic for p in pairs for s, lic in p.licences().items()},
        split=split.to_json() if split else None,
        text_encoder_lora=config.train_text_encoder,
    )
    text_encoder = base.text_encoder if config.train_text_encoder else None

    # 2. data
    data = prepare(pairs, config.resolution, ForegroundExtractor(config.foreground, config.rembg_model))
    with torch.no_grad(), precision.autocast():
        fixed_embeddings = pair_embeddings(base, config.prompts, config.batch_size)

    # 3. resume
    step = 0
    resume_from = latest_checkpoint(config.output) if config.resume else None
    if resume_from is not None:
        load_weights(resume_from, layers, text_encoder)
        optimizer.load_state_dict(torch.load(resume_from / OPTIMIZER_FILE, weights_only=True))
        generator.set_state(torch.load(resume_from / RNG_FILE, weights_only=True))
        if (resume_from / SCALER_FILE).is_file():
            precision.load_state_dict(torch.load(resume_from / SCALER_FILE, weights_only=True))
        step = read_info(resume_from).step

    # 4. loop
    losses: list[float] = []
    bar = tqdm(total=config.steps, initial=step, desc="dualanodiff train", disable=not config.progress)
    scheduler = base.noise_scheduler
    while step < config.steps:
        index = torch.randint(len(pairs), (config.batch_size,), generator=generator)
        whole, part, background = data.whole[index], data.part[index], data.background[index]
        if config.flip:
            whole, part, background = random_flips([whole, part, background], generator)
        with torch.no_grad(), precision.autocast():
            latents = base.encode_images(torch.stack([whole, part], dim=1).flatten(0, 1), generator).float()
            background_latents = base.encode_images(background, generator).float() if dual.bcm else None
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(index),), generator=generator).to(device)
        pair_timesteps = timesteps.repeat_interleave(2)
        noisy = scheduler.add_noise(latents, noise, pair_timesteps)

        with precision.autocast():
            embeddings = pair_embeddings(base, config.prompts, len(index)) if text_encoder is not None else fixed_embeddings
            dual_kwargs = None
            if background_latents is not None:
                background_noise = torch.randn(background_latents.shape, generator=generator).to(device)
                noisy_background = scheduler.add_noise(background_latents, background_noise, timesteps)
                store = BackgroundPass()
                base.unet(noisy_background, timesteps, embeddings[0::2], cross_attention_kwargs=store.capture())
                dual_kwargs = store.fuse()
            prediction = base.unet(noisy, pair_timesteps, embeddings, cross_attention_kwargs=dual_kwargs).sample
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, pair_timesteps)
        else:
            target = noise
        loss = F.mse_loss(prediction.float(), target.float())
        precision.step(loss, optimizer, trainable)

        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            info.step = step
            _save_resumable(Path(config.output) / f"checkpoint-{step}", layers, info, text_encoder, optimizer,
                            generator, precision)
    bar.close()

    # 5. save
    info.step = step
    fingerprint = save_checkpoint(Path(config.output), layers, info, text_encoder)
    return TrainResult(Path(config.output), fingerprint, step, losses)
