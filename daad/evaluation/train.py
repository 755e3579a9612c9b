"""Training the detector on normal images + pseudo-anomalies, and choosing its checkpoint.

A training step draws a batch uniformly (seeded) from the binary training set: normal
images with empty masks and a generator's synthetic anomalies with their masks, all
resized to ``size x size``; the detector learns the masks with focal loss (Adam, the
learning rate divided by 10 at 80% and 90% of the steps, as DRAEM does).

Checkpoint selection, every ``eval_every`` steps and at the end, keeps the state with
the best pixel AP at the model's resolution on a selection set:

- ``val`` (the proper protocol): a seeded ``val_fraction`` of the synthetic rows and of
  the normal images, held out of training;
- ``test-best`` (the CAI paper's protocol, optimistic): the real test set itself, as the
  paper picks "the best-performing model among 200 training epochs". Reports say which.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from daad.evaluation.data import Sample, as_rgb
from daad.evaluation.detector import DiscriminativeUNet, focal_loss
from daad.evaluation.metrics import evaluate_maps

PRECISIONS = ("bf16", "fp32")
Selection = Literal["val", "test-best"]
SELECTIONS: tuple[str, ...] = ("val", "test-best")
SELECTION_LABELS = {
    "val": "val: best pixel AP on a held-out split of the synthetic data",
    "test-best": "test-best: best pixel AP on the real test set (the paper's optimistic protocol)",
}


@dataclass(frozen=True)
class TrainConfig:
    size: int = 256
    """Square training / inference resolution (a multiple of 32)."""
    steps: int = 1000
    epochs: int | None = None
    """When set, overrides ``steps`` with ``epochs`` passes over the training set."""
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    selection: Selection = "val"
    eval_every: int = 100
    val_fraction: float = 0.1
    base_width: int = 64
    device: str = "auto"
    progress: bool = True
    test_curve: bool = False
    """Also record the pixel AP on the test set (model resolution) at each check: a learning curve that
    never chooses the checkpoint (with ``test-best`` it is the selection AP itself)."""
    precision: str = "auto"
    """``bf16`` (autocast + channels_last), ``fp32``, or ``auto``: bf16 where the device computes it natively."""

    def __post_init__(self) -> None:
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32, got {self.size}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or auto, got {self.precision!r}")
        if self.precision == "auto":
            object.__setattr__(self, "precision", native_precision(self.device))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedDetector:
    model: DiscriminativeUNet
    config: TrainConfig
    steps: int
    best_step: int
    best_selection_ap: float
    history: list[dict[str, float]] = field(default_factory=list)
    """``{"step", "loss", "selection_ap"}`` (and ``test_ap`` with ``test_curve``) at each selection check."""


def resolve_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def native_precision(device: str) -> str:
    """``bf16`` where ``device`` computes bfloat16 natively (a CUDA GPU that supports it; a CPU with
    AVX512-BF16 or AMX), else ``fp32``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "fp32"
    return "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _batch(images: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    x = images.to(device).float().expand(-1, 3, -1, -1) / 255  # a grey stack has one channel
    return x.contiguous(memory_format=torch.channels_last) if precision == "bf16" else x


def _resized(image: np.ndarray, size: int, grey: bool) -> np.ndarray:
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return small[..., None] if grey else as_rgb(small)


def stack(samples: Sequence[Sample], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``N x C x size x size`` and masks ``N x size x size``, both ``uint8``; ``C`` is 1 when every
    image is grey (a third of the memory; batches are expanded to 3 channels), else 3."""
    grey = all(s.image.ndim == 2 for s in samples)
    images = np.stack([_resized(s.image, size, grey) for s in samples])
    masks = np.stack([cv2.resize(np.ascontiguousarray(s.mask), (size, size), interpolation=cv2.INTER_NEAREST)
                      if s.mask.any() else np.zeros((size, size), np.uint8) for s in samples])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy((masks > 0).astype(np.uint8))


def predict(model: DiscriminativeUNet, images: torch.Tensor, batch_size: int, device: torch.device,
            precision: str = "fp32") -> np.ndarray:
    """Anomaly maps ``N x size x size`` (float32) for ``uint8`` images ``N x 3 x size x size``."""
    model.eval()
    with _autocast(device, precision):
        out = [model.anomaly_map(_batch(images[i : i + batch_size], device, precision)).float().cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def full_resolution_maps(model: DiscriminativeUNet, samples: Sequence[Sample], config: TrainConfig) -> list[np.ndarray]:
    """Anomaly maps at each sample's own resolution (bilinear upsampling of the model's output)."""
    device = resolve_device(config.device)
    images, _ = stack(samples, config.size)
    maps = predict(model, images, config.batch_size, device, config.precision)
    return [cv2.resize(m, (s.mask.shape[1], s.mask.shape[0]), interpolation=cv2.INTER_LINEAR) for m, s in zip(maps, samples)]


def split_for_validation(normals: Sequence[Sample], synthetic: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, val): a seeded ``fraction`` of the synthetic rows and of the normals goes to val (at least one of each)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for group in (normals, synthetic):
        order = rng.permutation(len(group))
        n_val = max(1, int(round(fraction * len(group)))) if len(group) > 1 else 0
        val += [group[i] for i in sorted(order[:n_val])]
        train += [group[i] for i in sorted(order[n_val:])]
    return train, val


def train_detector(
    normals: Sequence[Sample], synthetic: Sequence[Sample], test: Sequence[Sample], config: TrainConfig
) -> TrainedDetector:
    """Train from ``config.seed`` on ``normals`` + ``synthetic``; select the checkpoint as ``config.selection`` says."""
    device = resolve_device(config.device)
    if config.selection == "val":
        train, selection = split_for_validation(normals, synthetic, config.val_fraction, config.seed)
    else:
        train, selection = [*normals, *synthetic], list(test)
    images, masks = stack(train, config.size)
    sel_images, sel_masks = stack(selection, config.size)
    curve = stack(test, config.size) if config.test_curve and config.selection != "test-best" else None
    if not sel_masks.any():
        raise ValueError("the selection set has no anomalous pixel; give more synthetic rows or use test-best")
    steps = config.epochs * math.ceil(len(train) / config.batch_size) if config.epochs else config.steps

    torch.manual_seed(config.seed)
    model = DiscriminativeUNet(base_width=config.base_width).to(device)
    if config.precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(steps * 0.8), int(steps * 0.9)], gamma=0.1)
    batches = torch.Generator().manual_seed(config.seed)

    result = TrainedDetector(model, config, steps, best_step=0, best_selection_ap=-1.0)
    best_state = None
    running = []
    bar = tqdm(range(1, steps + 1), desc="detector", unit="step", disable=not config.progress)
    for step in bar:
        model.train()
        idx = torch.randint(len(train), (config.batch_size,), generator=batches)
        with _autocast(device, config.precision):
            logits = model(_batch(images[idx], device, config.precision))
        loss = focal_loss(logits.float(), masks[idx].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if step % config.eval_every == 0 or step == steps:
            maps = predict(model, sel_images, config.batch_size, device, config.precision)
            ap = evaluate_maps(list(maps), list(sel_masks.numpy())).pixel_ap
            result.history.append({"step": step, "loss": float(np.mean(running)), "selection_ap": ap})
            if config.test_curve:
                result.history[-1]["test_ap"] = ap if curve is None else evaluate_maps(
                    list(predict(model, curve[0], config.batch_size, device, config.precision)), list(curve[1].numpy())).pixel_ap
            running = []
            if ap > result.best_selection_ap:
                result.best_step, result.best_selection_ap = step, ap
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{result.history[-1]['loss']:.4f}", sel_ap=f"{ap:.3f}")
    model.load_state_dict(best_state)
    model.eval()
    return result
