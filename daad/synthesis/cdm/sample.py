"""Sample CDM: a new mask on each target, then the class's anomaly generated inside it.

Reads top to bottom: checkpoint facts, the base model with the learned tokens and the
spatial encoder loaded, then per batch of (target, class) jobs:

1. the masks: with the ``learnt`` generator, mask images denoised from ``a photo of
   <class-mask>`` and thresholded onto each target's foreground (the ``bank`` fallback for
   one that comes out empty, and for every job with ``--mask-generator bank``);
2. the anomalies: encode the targets, denoise from noise with classifier-free guidance,
   prompted ``a photo of <class> <where>`` with the spatial-aware embedding of each mask,
   blending the target's (noised) latents back outside the mask at every step (blended
   latent diffusion), decode, and composite: every pixel outside the dilated mask is the
   target's own.

Determinism: the bank's masks come from ``numpy`` generators seeded ``[seed, target index]``,
each row's noise from ``torch.Generator`` s seeded from ``[seed, target index, k]``; the same
checkpoint, targets, seed and batch size give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from daad.masks import bbox_of
from daad.synthesis.base import Synthesis, Target
from daad.synthesis.cdm.data import foreground_extractor, resize_image, resize_mask
from daad.synthesis.cdm.embeddings import (
    SPATIAL_FILE,
    ClassTokenEmbedding,
    SpatialEncoder,
    add_tokens,
    class_token,
    embedding_file,
    resize_masks,
)
from daad.synthesis.cdm.errors import CDMCheckpointError
from daad.synthesis.cdm.maskgen import MaskBank, mask_from_image
from daad.synthesis.cdm.train import (
    BANK_FILE,
    CONFIG_FILE,
    EMBEDDINGS_DIR,
    learned_tokens,
    load_spatial,
    prompts,
    require_text_to_image,
)
from daad.synthesis.diffusion import BaseModel, fingerprint, load_base, pick_device, sampling_dtype, torch_generator

MASK_GENERATORS = ("learnt", "bank")


@dataclass(frozen=True)
class SampleConfig:
    checkpoint: Path
    """A folder written by :func:`daad.synthesis.cdm.train.train`."""
    per_target: int = 10
    classes: tuple[str, ...] | None = None
    """Classes to sample (each row's class drawn uniformly); all trained classes when ``None``."""
    steps: int = 50
    guidance_scale: float = 7.5
    batch_size: int = 8
    dilate: int = 3
    """Pixels the mask is grown by for the generated region (a seam for the blend)."""
    mask_generator: str = "learnt"
    """``learnt`` (the mask diffusion model) or ``bank`` (the fallback of CAI mask shapes)."""
    foreground: str = "auto"
    rembg_model: Path | None = None
    precision: str = "auto"
    """Weights' dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``."""
    device: str | None = None

    def __post_init__(self) -> None:
        if self.mask_generator not in MASK_GENERATORS:
            raise ValueError(f"mask generator must be one of {MASK_GENERATORS}, got {self.mask_generator!r}")


@dataclass(frozen=True)
class _Job:
    index: int
    """Target index."""
    k: int
    target: Target
    rgb: np.ndarray
    foreground: np.ndarray
    anomaly_class: str
    mask: np.ndarray
    """The bank's mask until a learnt one replaces it."""
    mask_from: str = "bank"


@dataclass
class _Model:
    base: BaseModel
    tokens: ClassTokenEmbedding
    spatial: SpatialEncoder
    scheduler: object


class CDM:
    """The CDM generator (``generator`` column ``cdm``), reading a trained checkpoint."""

    name = "cdm"

    def __init__(self, config: SampleConfig) -> None:
        self.config = config
        folder = Path(config.checkpoint)
        if not (folder / CONFIG_FILE).is_file():
            raise CDMCheckpointError(f"{folder} is not a CDM checkpoint (no {CONFIG_FILE})")
        self.info: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        trained = tuple(self.info["classes"])
        self.classes = tuple(config.classes or trained)
        unknown = sorted(set(self.classes) - set(trained))
        if unknown:
            raise CDMCheckpointError(f"{folder} was not trained on {unknown} (trained: {list(trained)})")
        self.weight_files = [embedding_file(folder / EMBEDDINGS_DIR, t) for t in learned_tokens(trained)]
        self.weight_files.append(folder / SPATIAL_FILE)
        for file in self.weight_files:
            if not file.is_file():
                raise CDMCheckpointError(f"{file} does not exist: {folder} is not a complete CDM checkpoint")
        self.bank = MaskBank.load(folder / BANK_FILE)
        self.fingerprint = fingerprint([*self.weight_files, folder / BANK_FILE])
        self.foreground = foreground_extractor(config.foreground, config.rembg_model)
        self.device = pick_device(config.device)
        self.dtype = sampling_dtype(config.precision, self.device)
        self._model: _Model | None = None

    def params(self) -> dict[str, Any]:
        c = self.config
        return {
            "checkpoint": str(c.checkpoint), "checkpoint_fingerprint": self.fingerprint,
            "base_model": self.info["base_model"], "classes": list(self.classes), "per_target": c.per_target,
            "steps": c.steps, "guidance_scale": c.guidance_scale, "resolution": self.info["resolution"],
            "batch_size": c.batch_size, "dilate": c.dilate, "mask_generator": c.mask_generator,
            "foreground": self.foreground.method, "dtype": str(self.dtype).removeprefix("torch."),
            "trained_on": self.info["trained_on"],
        }

    def model(self) -> _Model:
        """The base model with the learned tokens and spatial encoder loaded (built once)."""
        if self._model is None:
            from diffusers import DDIMScheduler

            folder = Path(self.config.checkpoint)
            base = require_text_to_image(load_base(self.info["base_model"], device=self.device, dtype=self.dtype))
            tokens = add_tokens(base.tokenizer, base.text_encoder, learned_tokens(tuple(self.info["classes"])))
            tokens.load(folder / EMBEDDINGS_DIR)
            spatial = SpatialEncoder(tokens.rows.shape[1])
            load_spatial(spatial, folder / SPATIAL_FILE)
            tokens.to(self.device, self.dtype)
            spatial.to(self.device, self.dtype)
            self._model = _Model(base, tokens, spatial, DDIMScheduler.from_config(base.noise_scheduler.config))
        return self._model

    def generate(self, targets: Iterable[Target], view: object | None, seed: int, start: int = 0) -> Iterator[Synthesis]:
        """``per_target`` rows per target, in target order; ``view`` is unused (CDM learned from CAI output).
        ``targets`` are targets ``start, start + 1, ...`` of a larger list (their seeds are those indices)."""
        model = self.model()
        batch: list[_Job] = []
        for job in self._jobs(targets, seed, start):
            batch.append(job)
            if len(batch) == self.config.batch_size:
                yield from self._run(model, batch, seed)
                batch = []
        if batch:
            yield from self._run(model, batch, seed)

    def _jobs(self, targets: Iterable[Target], seed: int, start: int = 0) -> Iterator[_Job]:
        for index, target in enumerate(targets, start):
            rng = np.random.default_rng([seed, index])
            rgb = target.image if target.image.ndim == 3 else np.repeat(target.image[..., None], 3, axis=2)
            fg = self.foreground(target.id, rgb)
            for k in range(self.config.per_target):
                anomaly_class = self.classes[int(rng.integers(len(self.classes)))]
                yield _Job(index, k, target, rgb, fg, anomaly_class, self.bank.sample(anomaly_class, fg, rng))

    def _generators(self, jobs: list[_Job], seed: int, stream: int) -> list[torch.Generator]:
        return [torch_generator(int(np.random.default_rng([seed, j.index, j.k, stream]).integers(2**62))) for j in jobs]

    @torch.inference_mode()
    def _learnt_masks(self, model: _Model, jobs: list[_Job], seed: int) -> list[_Job]:
        """Each job with a mask generated by the class's mask token (the bank's where it comes out empty)."""
        context = self._context(model, [prompts(self.info["prompt"], j.anomaly_class)[1] for j in jobs])
        images = self._denoise(model, context, self._generators(jobs, seed, 1), None, None)
        out = []
        for job, image in zip(jobs, images, strict=True):
            mask = mask_from_image(image, job.foreground)
            out.append(job if mask is None else dataclasses.replace(job, mask=mask, mask_from="learnt"))
        return out

    def _context(self, model: _Model, texts: list[str], masks: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings, preceded by the empty prompt's when guided; ``masks`` feed the spatial slots."""
        base = model.base
        if masks is not None:
            with model.tokens.where(model.spatial(resize_masks(masks).to(self.device, self.dtype))):
                positive = base.encode_prompts(texts)
        else:
            positive = base.encode_prompts(texts)
        if self.config.guidance_scale <= 1.0:
            return positive
        return torch.cat([base.encode_prompts([""] * len(texts)), positive])

    def _denoise(
        self, model: _Model, context: torch.Tensor, generators: list[torch.Generator],
        known: torch.Tensor | None, inside: torch.Tensor | None,
    ) -> np.ndarray:
        """DDIM with guidance from per-row noise; with ``known``, blended back outside ``inside``. ``N x R x R x 3`` uint8."""
        c, base = self.config, model.base
        res = self.info["resolution"]
        factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
        shape = (base.unet.config.in_channels, res // factor, res // factor)
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device, self.dtype)
        if known is not None:
            known_noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device, self.dtype)
        guided = c.guidance_scale > 1.0
        scheduler = model.scheduler
        scheduler.set_timesteps(c.steps, device=self.device)
        timesteps = scheduler.timesteps
        latents = latents * scheduler.init_noise_sigma
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise_pred = base.unet(model_input, t, encoder_hidden_states=context).sample
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + c.guidance_scale * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            if known is not None:
                background = known if i + 1 == len(timesteps) else scheduler.add_noise(known, known_noise, timesteps[i + 1 : i + 2])
                latents = inside * latents + (1 - inside) * background
        decoded = base.decode_latents(latents)
        return (decoded.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def _run(self, model: _Model, jobs: list[_Job], seed: int) -> Iterator[Synthesis]:
        c, res = self.config, self.info["resolution"]
        if c.mask_generator == "learnt":
            jobs = self._learnt_masks(model, jobs, seed)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * c.dilate + 1, 2 * c.dilate + 1))
        regions_np = [cv2.dilate(j.mask, kernel) for j in jobs]
        pixels = torch.stack([torch.from_numpy(resize_image(j.rgb, res)) for j in jobs]).permute(0, 3, 1, 2)
        pixels = (pixels.float() / 127.5 - 1.0).to(self.device, self.dtype)
        known = model.base.vae.encode(pixels).latent_dist.mean * model.base.vae_scaling_factor
        regions = torch.stack([torch.from_numpy(resize_mask(r, res)) for r in regions_np]).unsqueeze(1).float()
        inside = F.adaptive_max_pool2d(regions, known.shape[-2:]).to(self.device, self.dtype)
        masks = torch.stack([torch.from_numpy(resize_mask(j.mask, res)) for j in jobs]).unsqueeze(1)
        context = self._context(model, [prompts(self.info["prompt"], j.anomaly_class)[0] for j in jobs], masks)
        decoded = self._denoise(model, context, self._generators(jobs, seed, 0), known, inside)
        for job, region, generated in zip(jobs, regions_np, decoded, strict=True):
            h, w = job.rgb.shape[:2]
            full = cv2.resize(generated, (w, h), interpolation=cv2.INTER_CUBIC)
            image = np.where(region[..., None] != 0, full, job.rgb)
            yield Synthesis(
                image=image,
                mask=job.mask,
                anomaly_class=job.anomaly_class,
                target_id=job.target.id,
                source_ids=tuple(self.info["source_ids"].get(job.anomaly_class, ())),
                details={
                    "checkpoint": self.fingerprint, "token": class_token(job.anomaly_class), "k": job.k,
                    "mask_from": job.mask_from, "bbox": list(bbox_of(job.mask)), "area": int(job.mask.sum()),
                },
            )


def input_licences(cdm: CDM, targets: Iterable[Target]) -> dict[str, str]:
    """Licence per id for the output card: each target's own; the real anomalies behind the
    CAI training data carry the training set's licence when it has exactly one (else unknown,
    and the card's parameters list every licence the training data carried)."""
    licences = {t.id: t.licence for t in targets}
    trained = cdm.info["trained_on"]["licences"]
    if len(trained) == 1:
        for ids in cdm.info["source_ids"].values():
            licences.update(dict.fromkeys(ids, trained[0]))
    return licences
