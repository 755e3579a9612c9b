"""What every diffusion generator (CDM, DualAnoDiff) shares: the base model, seeds, fingerprints.

- :func:`load_base` loads a Stable-Diffusion-1.5-style model (tokenizer, text encoder,
  VAE, UNet, noise scheduler) from a local diffusers folder, or from a hub id (only
  when online; a local folder never touches the network), with every weight frozen.
- :func:`torch_generator` is the one way a seed becomes a ``torch.Generator``.
- :func:`fingerprint` is the sha256 over saved trainable weights that a sampled
  dataset records, so each row can be traced to the exact checkpoint that made it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from daad.errors import DaadError


class BaseModelError(DaadError):
    """A base model folder or hub id cannot be loaded."""


@dataclass
class BaseModel:
    """The frozen parts of a latent diffusion model."""

    source: str
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object
    """The training (DDPM) scheduler built from the model's scheduler config."""

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def to(self, device: torch.device | str) -> BaseModel:
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(device)
        return self

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states for ``prompts``, padded to the tokenizer's max length."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0]

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE latents of ``pixels`` in ``[-1, 1]``, scaled by the VAE's scaling factor."""
        posterior = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        return posterior.sample(generator=generator) * self.vae_scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in ``[0, 1]`` (``B x 3 x H x W``) of scaled ``latents``."""
        pixels = self.vae.decode(latents / self.vae_scaling_factor).sample
        return (pixels / 2 + 0.5).clamp(0, 1)


def load_base(source: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> BaseModel:
    """Load and freeze an SD-1.5-style model from a local diffusers folder or a hub id."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(source).expanduser()
    local = path.is_dir()
    if not local and (path.is_absolute() or str(source).startswith(".")):
        raise BaseModelError(f"base model folder {source} does not exist")
    where = str(path) if local else str(source)
    kwargs = {"local_files_only": True} if local else {}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(where, subfolder="text_encoder", dtype=dtype, **kwargs)
        vae = AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=dtype, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=dtype, **kwargs)
        noise_scheduler = DDPMScheduler.from_pretrained(where, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load base model {source}: {exc}") from exc
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    return BaseModel(str(source), tokenizer, text_encoder, vae, unet, noise_scheduler)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with ``seed`` on ``device``: the only source of torch randomness."""
    return torch.Generator(device=device).manual_seed(int(seed))


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fingerprint(files: Iterable[Path]) -> str:
    """sha256 over the names and bytes of saved trainable-weight files, in name order."""
    digest = hashlib.sha256()
    for file in sorted(Path(f) for f in files):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
