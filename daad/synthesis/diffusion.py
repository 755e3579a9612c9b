"""What every diffusion generator (CDM, DualAnoDiff) shares: the base model, seeds, fingerprints.

- :func:`load_base` loads a Stable-Diffusion-1.5-style model (tokenizer, text encoder,
  VAE, UNet, noise scheduler) from a local diffusers folder, or from a hub id (only
  when online; a local folder never touches the network), with every weight frozen.
- :func:`torch_generator` is the one way a seed becomes a ``torch.Generator``.
- :func:`fingerprint` is the sha256 over saved trainable weights that a sampled
  dataset records, so each row can be traced to the exact checkpoint that made it.
- :class:`TrainingPrecision` is how a training step runs: autocast in fp16/bf16 with the
  frozen weights in that dtype and the trainable ones in float32 (as diffusers' training
  scripts), loss scaling for fp16, gradient clipping; :func:`sampling_dtype` the weight
  dtype sampling runs in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from daad.atomic import write_atomically
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

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> BaseModel:
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(device)
            if dtype is not None and module.dtype != dtype:
                module.to(dtype)
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


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``tensors`` as a safetensors file, atomically (a crash leaves the old file or none)."""
    from safetensors.torch import save

    write_atomically(Path(path), [save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})])
    return Path(path)


def fingerprint(files: Iterable[Path]) -> str:
    """sha256 over the names and bytes of saved trainable-weight files, in name order."""
    digest = hashlib.sha256()
    for file in sorted(Path(f) for f in files):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
"""``--mixed-precision`` choices; ``auto``: bf16 on a CUDA device that supports it, else fp16 on CUDA, none on CPU."""
SAMPLING_PRECISION = ("auto", "fp32", "fp16", "bf16")
"""``--precision`` choices of sampling; ``auto``: fp16 on CUDA (as the authors sample), fp32 on CPU."""
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _checked(name: str, choices: Sequence[str]) -> str:
    if name not in choices:
        raise ValueError(f"precision must be one of {', '.join(choices)}; got {name!r}")
    return name


def mixed_precision_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``name`` means on ``device`` (None: full precision)."""
    if _checked(name, MIXED_PRECISION) == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return HALF.get(name)


def sampling_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weight dtype sampling runs in for ``name`` on ``device``."""
    if _checked(name, SAMPLING_PRECISION) == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return HALF.get(name, torch.float32)


class TrainingPrecision:
    """Autocast, loss scaling (fp16 only) and gradient clipping for one training loop.

    ``dtype`` None trains in float32. With a half ``dtype`` the caller casts the frozen
    weights to it (:meth:`BaseModel.to`) and keeps the trainable ones float32, so the
    optimiser updates full-precision weights and memory holds the frozen ones at half size.
    """

    def __init__(self, dtype: torch.dtype | None, device: torch.device, max_grad_norm: float | None) -> None:
        self.dtype = dtype
        self.device = torch.device(device)
        self.max_grad_norm = max_grad_norm
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype == torch.float16 else None

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """Backward, clip the gradient norm of ``params`` (when set), optimiser step, zero grads."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
