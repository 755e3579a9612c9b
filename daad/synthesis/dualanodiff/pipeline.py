"""Sampling [whole, part] pairs from a trained DualAnoDiff model.

The batch keeps every pair in adjacent rows, ``[whole₀, part₀, whole₁, part₁, …]``;
classifier-free guidance doubles it as ``[uncond pairs…, cond pairs…]`` (each half still
paired), and the guided prediction is split back the same way, so pair ``i`` of a batch of
``n`` is exactly what it would be sampled alone. With BCM, each step first runs the
background latents, noised to the same timestep with noise drawn afresh at every step (as
the authors' ``RefOnlyNoisedUNet``), through the UNet to collect the self-attention inputs
the whole branch fuses in. The pipeline runs in the dtype of the loaded weights
(``from_checkpoint(dtype=...)``: fp16 halves memory on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from daad.synthesis.diffusion import BaseModel, load_base
from daad.synthesis.dualanodiff.attention import BackgroundPass, DualConfig, install
from daad.synthesis.dualanodiff.checkpoint import Prompts, add_text_encoder_lora, load_weights, read_info


@dataclass
class PairImages:
    whole: np.ndarray
    """``N x H x W x 3`` ``uint8``."""
    part: np.ndarray
    """``N x H x W x 3`` ``uint8``."""


def pair_embeddings(base: BaseModel, prompts: Prompts, num_pairs: int, guided: bool = False) -> torch.Tensor:
    """``[whole, part] * n`` prompt embeddings, preceded by ``["", ""] * n`` when guided."""
    cond = base.encode_prompts([prompts.whole, prompts.part]).repeat(num_pairs, 1, 1)
    if not guided:
        return cond
    uncond = base.encode_prompts(["", ""]).repeat(num_pairs, 1, 1)
    return torch.cat([uncond, cond])


class DualAnoDiffPipeline:
    """A frozen base model with dual-branch processors installed, and the denoising loop."""

    def __init__(self, base: BaseModel, layers: nn.ModuleDict, prompts: Prompts, resolution: int) -> None:
        from diffusers import DDIMScheduler

        self.base = base
        self.layers = layers
        self.prompts = prompts
        self.resolution = resolution
        self.scheduler = DDIMScheduler.from_config(base.noise_scheduler.config)

    @classmethod
    def from_base(cls, base: BaseModel, config: DualConfig, prompts: Prompts = Prompts(), resolution: int = 512):
        return cls(base, install(base.unet, config), prompts, resolution)

    @classmethod
    def from_checkpoint(
        cls,
        folder: Path,
        *,
        base_model: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        """Base model (the checkpoint's, or ``base_model``) plus the saved trainable weights, all in ``dtype``."""
        info = read_info(folder)
        base = load_base(base_model or info.base_model, device=device, dtype=dtype)
        pipe = cls.from_base(base, info.dual, info.prompts, info.resolution)
        if info.text_encoder_lora:
            for param in add_text_encoder_lora(base.text_encoder, info.dual.rank):
                param.data = param.data.to(dtype)
        load_weights(folder, pipe.layers, base.text_encoder if info.text_encoder_lora else None)
        pipe.layers.eval()
        return pipe

    @property
    def device(self) -> torch.device:
        return self.base.unet.device

    @torch.no_grad()
    def __call__(
        self,
        num_pairs: int,
        *,
        generator: torch.Generator | list[torch.Generator],
        num_inference_steps: int = 100,
        guidance_scale: float = 2.5,
        backgrounds: torch.Tensor | None = None,
        progress: bool = False,
    ) -> PairImages:
        """Sample ``num_pairs`` pairs. ``backgrounds``: ``num_pairs x 3 x R x R`` in ``[-1, 1]`` (BCM).

        ``generator``: one for the batch, or one per pair (as in diffusers), in which case pair
        ``i`` depends on ``generator[i]`` only and equals the same pair sampled alone.
        """
        base, unet, scheduler = self.base, self.base.unet, self.scheduler
        generators = generator if isinstance(generator, list) else [generator]
        if len(generators) not in (1, num_pairs):
            raise ValueError(f"{len(generators)} generators for {num_pairs} pairs")
        guided = guidance_scale > 1
        embeddings = pair_embeddings(base, self.prompts, num_pairs, guided)
        size = self.resolution // (2 ** (len(base.vae.config.block_out_channels) - 1))
        latent_shape = (unet.config.in_channels, size, size)
        latents = self._noise(generators, num_pairs, 2, latent_shape) * scheduler.init_noise_sigma
        use_bcm = backgrounds is not None and any(p.bcm is not None for p in self.layers.values())
        if use_bcm:
            if backgrounds.shape[0] != num_pairs:
                raise ValueError(f"{backgrounds.shape[0]} backgrounds for {num_pairs} pairs")
            if len(generators) == 1:
                background_latents = base.encode_images(backgrounds, generators[0])
            else:
                background_latents = torch.cat([base.encode_images(b[None], g) for b, g in zip(backgrounds, generators)])
            whole_embeddings = embeddings[0::2]  # the whole prompt (uncond then cond) for each background

        scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in tqdm(scheduler.timesteps, desc="dualanodiff", disable=not progress, leave=False):
            dual_kwargs = None
            if use_bcm:
                background_noise = self._noise(generators, num_pairs, 1, latent_shape)
                noisy_background = base.noise_scheduler.add_noise(background_latents, background_noise, t.reshape(1))
                store = BackgroundPass()
                unet(torch.cat([noisy_background] * (2 if guided else 1)), t, whole_embeddings, cross_attention_kwargs=store.capture())
                dual_kwargs = store.fuse()
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise = unet(model_input, t, embeddings, cross_attention_kwargs=dual_kwargs).sample
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample  # DDIM, eta 0: deterministic

        pixels = base.decode_latents(latents)
        images = (pixels.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
        return PairImages(whole=images[0::2], part=images[1::2])

    def _noise(self, generators: list[torch.Generator], num_pairs: int, rows: int, shape: tuple) -> torch.Tensor:
        """Gaussian noise, ``rows`` per pair, drawn from the pair's own generator when there is one each."""
        dtype = self.base.unet.dtype
        if len(generators) == 1:
            return torch.randn((num_pairs * rows, *shape), generator=generators[0], dtype=dtype).to(self.device)
        draws = [torch.randn((rows, *shape), generator=g, dtype=dtype) for g in generators]
        return torch.cat(draws).to(self.device)
