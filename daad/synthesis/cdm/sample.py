"""Sample CDM: a new mask on each target, then the class's anomaly generated inside it.

Reads top to bottom: checkpoint facts, base pipeline with the learned class tokens
loaded by diffusers' own textual-inversion loader, then per batch of (target, class,
mask) jobs: encode the targets, denoise from noise with classifier-free guidance while
blending the target's (noised) latents back outside the mask at every step (blended
latent diffusion), decode, and composite: every pixel outside the dilated mask is the
target's own.

Determinism: the masks come from ``numpy`` generators seeded ``[seed, target index]``,
each row's noise from a ``torch.Generator`` seeded from ``[seed, target index, k]``;
the same checkpoint, targets, seed and batch size give the same bytes.
"""

from __future__ import annotations

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
from daad.synthesis.cdm.data import resize_image, resize_mask
from daad.synthesis.cdm.embeddings import class_token, embedding_file
from daad.synthesis.cdm.errors import CDMCheckpointError
from daad.synthesis.cdm.maskgen import MaskGenerator
from daad.synthesis.cdm.train import CONFIG_FILE, EMBEDDINGS_DIR, MASKGEN_FILE, require_text_to_image
from daad.synthesis.diffusion import fingerprint, load_base, pick_device, sampling_dtype, torch_generator
from daad.synthesis.foreground import ForegroundExtractor


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
    foreground: str = "auto"
    precision: str = "auto"
    """Weights' dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``."""
    device: str | None = None


@dataclass(frozen=True)
class _Job:
    index: int
    """Target index."""
    k: int
    target: Target
    rgb: np.ndarray
    anomaly_class: str
    mask: np.ndarray
    region: np.ndarray
    """The dilated mask: where generated pixels are used."""


class CDM:
    """The CDM generator (``generator`` column ``cdm``), reading a trained checkpoint."""

    name = "cdm"

    def __init__(self, config: SampleConfig) -> None:
        self.config = config
        folder = Path(config.checkpoint)
        if not (folder / CONFIG_FILE).is_file():
            raise CDMCheckpointError(f"{folder} is not a CDM checkpoint (no {CONFIG_FILE})")
        self.info: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        trained = self.info["classes"]
        self.classes = tuple(config.classes or trained)
        unknown = sorted(set(self.classes) - set(trained))
        if unknown:
            raise CDMCheckpointError(f"{folder} was not trained on {unknown} (trained: {trained})")
        self.embedding_files = [embedding_file(folder / EMBEDDINGS_DIR, c) for c in trained]
        for file in self.embedding_files:
            if not file.is_file():
                raise CDMCheckpointError(f"embedding file {file} does not exist")
        self.maskgen = MaskGenerator.load(folder / MASKGEN_FILE)
        self.fingerprint = fingerprint([*self.embedding_files, folder / MASKGEN_FILE])
        self.foreground = ForegroundExtractor(config.foreground)
        self.device = pick_device(config.device)
        self.dtype = sampling_dtype(config.precision, self.device)
        self._pipeline = None

    def params(self) -> dict[str, Any]:
        c = self.config
        return {
            "checkpoint": str(c.checkpoint), "checkpoint_fingerprint": self.fingerprint,
            "base_model": self.info["base_model"], "classes": list(self.classes), "per_target": c.per_target,
            "steps": c.steps, "guidance_scale": c.guidance_scale, "resolution": self.info["resolution"],
            "batch_size": c.batch_size, "dilate": c.dilate, "foreground": self.foreground.method,
            "trained_on": self.info["trained_on"],
        }

    def pipeline(self):
        """The base model as a diffusers pipeline with the class tokens loaded (built once)."""
        if self._pipeline is None:
            from diffusers import DDIMScheduler, StableDiffusionPipeline

            base = require_text_to_image(
                load_base(self.info["base_model"], device=self.device, dtype=self.dtype)
            )
            pipe = StableDiffusionPipeline(
                vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
                scheduler=DDIMScheduler.from_config(base.noise_scheduler.config),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            pipe.load_textual_inversion(
                [str(f) for f in self.embedding_files], token=[class_token(c) for c in self.info["classes"]]
            )
            self._pipeline = pipe
        return self._pipeline

    def generate(self, targets: Iterable[Target], view: object | None, seed: int) -> Iterator[Synthesis]:
        """``per_target`` rows per target, in target order; ``view`` is unused (CDM learned from CAI output)."""
        pipe = self.pipeline()
        batch: list[_Job] = []
        for job in self._jobs(targets, seed):
            batch.append(job)
            if len(batch) == self.config.batch_size:
                yield from self._run(pipe, batch, seed)
                batch = []
        if batch:
            yield from self._run(pipe, batch, seed)

    def _jobs(self, targets: Iterable[Target], seed: int) -> Iterator[_Job]:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.config.dilate + 1, 2 * self.config.dilate + 1))
        for index, target in enumerate(targets):
            rng = np.random.default_rng([seed, index])
            rgb = target.image if target.image.ndim == 3 else np.repeat(target.image[..., None], 3, axis=2)
            fg = self.foreground(target.id, rgb)
            for k in range(self.config.per_target):
                anomaly_class = self.classes[int(rng.integers(len(self.classes)))]
                mask = self.maskgen.sample(anomaly_class, fg, rng)
                yield _Job(index, k, target, rgb, anomaly_class, mask, cv2.dilate(mask, kernel))

    @torch.inference_mode()
    def _run(self, pipe, jobs: list[_Job], seed: int) -> Iterator[Synthesis]:
        c, res = self.config, self.info["resolution"]
        device, dtype = self.device, pipe.unet.dtype
        pixels = torch.stack([torch.from_numpy(resize_image(j.rgb, res)) for j in jobs]).permute(0, 3, 1, 2)
        pixels = (pixels.float() / 127.5 - 1.0).to(device, dtype)
        scale = pipe.vae.config.scaling_factor
        known = pipe.vae.encode(pixels).latent_dist.mean * scale
        regions = torch.stack([torch.from_numpy(resize_mask(j.region, res)) for j in jobs]).unsqueeze(1).float()
        inside = F.adaptive_max_pool2d(regions, known.shape[-2:]).to(device, dtype)

        generators = [torch_generator(int(np.random.default_rng([seed, j.index, j.k]).integers(2**62))) for j in jobs]
        shape = known.shape[1:]
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)
        known_noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)

        guided = c.guidance_scale > 1.0
        prompts = [self.info["prompt"].format(token=class_token(j.anomaly_class)) for j in jobs]
        positive, negative = pipe.encode_prompt(prompts, device, 1, guided, negative_prompt=[""] * len(jobs))
        context = torch.cat([negative, positive]) if guided else positive

        scheduler = pipe.scheduler
        scheduler.set_timesteps(c.steps, device=device)
        timesteps = scheduler.timesteps
        latents = latents * scheduler.init_noise_sigma
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise_pred = pipe.unet(model_input, t, encoder_hidden_states=context).sample
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + c.guidance_scale * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            background = known if i + 1 == len(timesteps) else scheduler.add_noise(known, known_noise, timesteps[i + 1 : i + 2])
            latents = inside * latents + (1 - inside) * background

        decoded = pipe.vae.decode(latents / scale).sample
        decoded = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for job, generated in zip(jobs, decoded, strict=True):
            h, w = job.rgb.shape[:2]
            full = cv2.resize(generated, (w, h), interpolation=cv2.INTER_CUBIC)
            image = np.where(job.region[..., None] != 0, full, job.rgb)
            yield Synthesis(
                image=image,
                mask=job.mask,
                anomaly_class=job.anomaly_class,
                target_id=job.target.id,
                source_ids=tuple(self.info["source_ids"].get(job.anomaly_class, ())),
                details={
                    "checkpoint": self.fingerprint, "token": class_token(job.anomaly_class), "k": job.k,
                    "bbox": list(bbox_of(job.mask)), "area": int(job.mask.sum()),
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
