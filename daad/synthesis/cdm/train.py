"""Train CDM on a CAI output dataset: anomaly, mask and spatial-aware embeddings, and the mask bank.

Reads top to bottom like diffusers' textual-inversion example: arguments, data, frozen
base model, new tokens and the spatial encoder, mask bank, optimiser, resume, loop,
checkpoints, save.

Every step trains, in one UNet call, both halves of AnomalyDiffusion:

- **anomaly generation**: the prompt ``a photo of <class> <where>`` (anomaly embedding, 4
  vectors, plus the spatial-aware embedding computed from the row's mask by
  :class:`~daad.synthesis.cdm.embeddings.SpatialEncoder`), the loss the noise-prediction
  error inside the anomaly mask (AnomalyDiffusion's masked loss; ``background_weight`` > 0
  adds the rest of the image at that weight), so the tokens learn the anomaly, not the domain;
- **mask generation** (``train_mask.py`` there): the prompt ``a photo of <class-mask>`` and
  the row's mask as a black-and-white image, full-image loss: a textual-inversion diffusion
  model of the class's masks, sampled by :class:`~daad.synthesis.cdm.maskgen.LearntMasks`.

The statistical mask bank (:class:`~daad.synthesis.cdm.maskgen.MaskBank`) is fitted too,
as the named fallback.

Determinism: one CPU ``torch.Generator`` seeded from ``seed`` draws batches, noise and
timesteps. A checkpoint holds the class rows, the optimiser state, that generator's
state and the step, so resuming continues the very same run (same losses).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from daad.atomic import write_atomically
from daad.synthesis.cdm.data import TrainingSet, foreground_extractor, load_training_set
from daad.synthesis.cdm.embeddings import (
    SPATIAL_FILE,
    SPATIAL_TOKEN,
    VECTORS_PER_TOKEN,
    ClassTokenEmbedding,
    SpatialEncoder,
    add_tokens,
    class_token,
    mask_token,
    resize_masks,
    spelled,
)
from daad.synthesis.cdm.errors import CDMCheckpointError
from daad.synthesis.cdm.maskgen import MaskBank
from daad.synthesis.diffusion import (
    MIXED_PRECISION,
    BaseModel,
    TrainingPrecision,
    fingerprint,
    load_base,
    mixed_precision_dtype,
    pick_device,
    save_tensors,
    torch_generator,
)

PROMPT = "a photo of {token}"
RESOLUTION = 256
"""The paper's CDM resolution (AnomalyDiffusion trains at 256 px)."""
CONFIG_FILE = "cdm.json"
EMBEDDINGS_DIR = "embeddings"
BANK_FILE = "mask_bank.npz"
STATE_FILE = "state.pt"
CHECKPOINTS_DIR = "checkpoints"
ENCODE_CHUNK = 8


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    """A CAI output dataset folder (``daad synth cai`` output) of one target domain."""
    base_model: str
    """A local diffusers folder (SD-1.5 style) or a hub id."""
    output: Path
    classes: tuple[str, ...] | None = None
    """Classes to learn (CDM-5 style subset); all classes present when ``None`` (CDM-8)."""
    resolution: int = RESOLUTION
    steps: int = 3000
    learning_rate: float = 5e-3
    batch_size: int = 4
    seed: int = 0
    mixed_precision: str = "auto"
    """``auto`` (bf16/fp16 on CUDA, none on CPU), ``no``, ``fp16`` or ``bf16``: autocast, frozen weights in that dtype."""
    gradient_checkpointing: bool = False
    """Recompute the UNet's activations in backward (less memory, more time)."""
    max_grad_norm: float | None = None
    """Clip the token rows' gradient norm (None: no clipping, as textual inversion)."""
    checkpoint_every: int = 500
    resume: bool = False
    """Continue from the latest checkpoint under ``output``."""
    background_weight: float = 0.0
    prompt: str = PROMPT
    foreground: str = "auto"
    """Foreground method for the CAI images (where the bank's masks sit on the object)."""
    rembg_model: Path | None = None
    """Local U²-Net ``.onnx`` for ``foreground`` ``auto``/``rembg`` (else ``DAAD_REMBG_MODEL``)."""
    device: str | None = None

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if "{token}" not in self.prompt:
            raise ValueError(f"the prompt template must contain '{{token}}', got {self.prompt!r}")
        if self.resolution % 8 or self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("resolution must be a multiple of 8; steps, batch size and checkpoint interval positive")


@dataclass
class TrainResult:
    output: Path
    losses: list[float] = field(default_factory=list)
    """Loss of every step of the run, resumed steps included."""
    fingerprint: str = ""
    base: BaseModel | None = None
    """The base model as trained (frozen weights), for inspection."""
    tokens: ClassTokenEmbedding | None = None
    """The trained token rows (anomaly and mask tokens)."""
    spatial: SpatialEncoder | None = None
    """The trained spatial encoder."""


def learned_tokens(classes: tuple[str, ...]) -> dict[str, str]:
    """Every token CDM learns, with the words it starts from: per class, the anomaly token then the mask token."""
    return {t: w for c in classes for t, w in ((class_token(c), c), (mask_token(c), f"{c} mask"))}


def prompts(template: str, anomaly_class: str) -> tuple[str, str]:
    """(anomaly prompt with the spatial slots, mask prompt) of a class, every token spelled out."""
    return (
        f"{template.format(token=spelled(class_token(anomaly_class)))} {spelled(SPATIAL_TOKEN)}",
        template.format(token=spelled(mask_token(anomaly_class))),
    )


def train(config: TrainConfig, progress: bool = True, base: BaseModel | None = None) -> TrainResult:
    """Train into ``config.output``; ``base``: an already loaded base model to use instead of ``config.base_model``."""
    output = Path(config.output)
    device = pick_device(config.device) if base is None else base.unet.device
    precision = TrainingPrecision(mixed_precision_dtype(config.mixed_precision, device), device, config.max_grad_norm)
    weight_dtype = precision.dtype or torch.float32

    # Data: the CAI rows of the chosen classes, at the training resolution.
    data = load_training_set(config.data, config.resolution, config.classes)

    # Models: the frozen base, the new tokens in the text encoder, the spatial encoder.
    base = require_text_to_image(base or load_base(config.base_model, device=device, dtype=weight_dtype))
    base.to(device, weight_dtype)
    base.text_encoder.to(torch.float32)  # the trainable token rows live in its embedding
    if config.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tokens = add_tokens(base.tokenizer, base.text_encoder, learned_tokens(data.classes))
        spatial = SpatialEncoder(tokens.rows.shape[1])
    tokens.to(device)
    spatial.to(device)
    class_prompts = [prompts(config.prompt, c) for c in data.classes]

    # The fallback mask bank: the CAI masks on their objects.
    foreground = foreground_extractor(config.foreground, config.rembg_model)
    bank = MaskBank.fit(
        data.full_masks,
        [foreground(f"row-{i}", image) for i, image in enumerate(data.full_images)],
        [data.classes[i] for i in data.labels],
    )

    # Latents of every training image (frozen VAE: encoded once, in a fixed order).
    latents, mask_latents, latent_masks = _encode(base, data, config.seed, progress)
    masks = resize_masks(torch.from_numpy(data.masks).unsqueeze(1))

    trainable = [tokens.rows, *spatial.parameters()]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    generator = torch_generator(config.seed)
    result = TrainResult(output, base=base, tokens=tokens, spatial=spatial)
    start = 0
    if config.resume:
        start = _resume(output, tokens, spatial, optimizer, precision, generator, result)
    elif latest_checkpoint(output) is not None:
        raise CDMCheckpointError(f"{output} already holds checkpoints: resume them or train into a new folder")

    output.mkdir(parents=True, exist_ok=True)
    bank.save(output / BANK_FILE)
    _write_config(output, config, data)

    scheduler = base.noise_scheduler
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="cdm train", disable=not progress)
    for step in bar:
        idx = torch.randint(len(data), (config.batch_size,), generator=generator)
        n = len(idx)
        noise = torch.randn((2 * n, *latents.shape[1:]), generator=generator).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (2 * n,), generator=generator).to(device)
        clean = torch.cat([latents[idx], mask_latents[idx]]).to(device)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(clean, noise, timesteps)
        weights = latent_masks[idx].to(device)
        weights = weights + config.background_weight * (1 - weights)
        labels = data.labels[idx.numpy()]
        with precision.autocast():
            with tokens.where(spatial(masks[idx].to(device))):
                anomaly_hidden = base.encode_prompts([class_prompts[i][0] for i in labels])
            mask_hidden = base.encode_prompts([class_prompts[i][1] for i in labels])
            hidden = torch.cat([anomaly_hidden, mask_hidden]).to(weight_dtype)
            prediction = base.unet(noisy.to(weight_dtype), timesteps, hidden).sample.float()
        target = target.float()
        loss = masked_mse(prediction[:n], target[:n], weights) + F.mse_loss(prediction[n:], target[n:])
        precision.step(loss, optimizer, trainable)
        result.losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _save_checkpoint(output / CHECKPOINTS_DIR / f"step-{step + 1:07d}", tokens, spatial, optimizer, precision, generator, result)

    files = [*tokens.save(output / EMBEDDINGS_DIR), save_spatial(spatial, output / SPATIAL_FILE)]
    result.fingerprint = fingerprint([*files, output / BANK_FILE])
    return result


def save_spatial(spatial: SpatialEncoder, path: Path) -> Path:
    return save_tensors(spatial.state_dict(), path)


def load_spatial(spatial: SpatialEncoder, path: Path) -> None:
    if not path.is_file():
        raise CDMCheckpointError(f"spatial encoder file {path} does not exist")
    missing, unexpected = spatial.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise CDMCheckpointError(f"{path} does not match the spatial encoder: missing {missing[:3]}, unexpected {unexpected[:3]}")


def require_text_to_image(base: BaseModel) -> BaseModel:
    """CDM inpaints by latent blending, so the UNet must take plain latents (not an inpainting UNet)."""
    channels = base.unet.config.in_channels
    if channels != base.vae.config.latent_channels:
        raise CDMCheckpointError(
            f"base model {base.source}: UNet takes {channels} input channels; CDM needs a text-to-image "
            f"UNet ({base.vae.config.latent_channels} channels), not an inpainting one"
        )
    return base


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error weighted per latent pixel (``weights`` is ``B x 1 x h x w``)."""
    error = F.mse_loss(prediction, target, reduction="none") * weights
    return error.sum() / (weights.sum() * prediction.shape[1]).clamp(min=1.0)


@torch.no_grad()
def _encode(base: BaseModel, data: TrainingSet, seed: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents of the images and of the masks (as black-and-white images), and the latent-size masks."""
    generator = torch_generator(seed)
    images, masks = [], []
    for part in tqdm(torch.arange(len(data)).split(ENCODE_CHUNK), desc="encode", disable=not progress):
        images.append(base.encode_images(data.pixels(part), generator).float().cpu())
        masks.append(base.encode_images(data.mask_pixels(part), generator).float().cpu())
    latents = torch.cat(images)
    full = torch.from_numpy(data.masks).unsqueeze(1).float()
    # a latent pixel belongs to the anomaly when any of the pixels it covers does
    return latents, torch.cat(masks), F.adaptive_max_pool2d(full, latents.shape[-2:])


def _save_checkpoint(
    folder: Path, tokens: ClassTokenEmbedding, spatial: SpatialEncoder, optimizer, precision: TrainingPrecision,
    generator: torch.Generator, result: TrainResult,
) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    tokens.save(tmp / EMBEDDINGS_DIR)
    save_spatial(spatial, tmp / SPATIAL_FILE)
    state = {
        "step": len(result.losses),
        "losses": result.losses,
        "optimizer": optimizer.state_dict(),
        "scaler": precision.state_dict(),
        "generator": generator.get_state(),
    }
    torch.save(state, tmp / STATE_FILE)
    tmp.replace(folder)


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted((Path(output) / CHECKPOINTS_DIR).glob("step-*[0-9]"))
    return found[-1] if found else None


def _resume(
    output: Path, tokens: ClassTokenEmbedding, spatial: SpatialEncoder, optimizer, precision: TrainingPrecision,
    generator: torch.Generator, result: TrainResult,
) -> int:
    folder = latest_checkpoint(output)
    if folder is None:
        raise CDMCheckpointError(f"nothing to resume: no checkpoint under {output / CHECKPOINTS_DIR}")
    tokens.load(folder / EMBEDDINGS_DIR)
    load_spatial(spatial, folder / SPATIAL_FILE)
    state = torch.load(folder / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    precision.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    result.losses[:] = state["losses"]
    return int(state["step"])


def _write_config(output: Path, config: TrainConfig, data: TrainingSet) -> None:
    """What sampling needs besides the weights, and the provenance every sample inherits."""
    info = {
        "base_model": str(config.base_model),
        "classes": list(data.classes),
        "tokens": {c: class_token(c) for c in data.classes},
        "mask_tokens": {c: mask_token(c) for c in data.classes},
        "vectors_per_token": VECTORS_PER_TOKEN,
        "prompt": config.prompt,
        "resolution": config.resolution,
        "training": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("output", "resume", "device", "rembg_model")
        },
        "training_rows": {c: int(np.sum(data.labels == i)) for i, c in enumerate(data.classes)},
        "trained_on": {
            "dataset": str(config.data),
            "generator": data.info.get("generator"),
            "evaluation": data.info.get("evaluation"),
            "licences": sorted(data.info.get("licences", {})),
        },
        "source_ids": data.source_ids,
    }
    write_atomically(output / CONFIG_FILE, [json.dumps(info, indent=2, sort_keys=True) + "\n"])
