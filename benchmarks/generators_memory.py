"""Peak memory of one training step of DualAnoDiff and CDM on SD-1.5-shaped models with random weights.

Models are built from SD-1.5's configs (UNet, VAE, CLIP text encoder; nothing downloaded),
optionally narrowed by ``--width`` (every channel count times it; 1 = SD-1.5 itself), and
trained for exactly one step through the generators' own ``train`` functions on synthetic
pairs (the image content does not change memory). Each measurement runs in a fresh
subprocess: the model is built, the process's memory high-water mark is reset, one step
runs, and the step's peak is read back:

- CPU: peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` just before the step; tracemalloc does not see torch's buffers);
- CUDA: ``torch.cuda.max_memory_allocated`` (reset just before the step), the weights
  already on the device.

Tables: batch 1/2/4 × full precision / mixed precision (/ + gradient checkpointing) at each
resolution. On CPU the run is at reduced width and resolution; the scaling with batch and
resolution is shown, and the weights-and-optimiser part of the paper-default run is
computed exactly from the full-size models (built on the meta device). On a CUDA machine
the same script measures the real thing: ``python benchmarks/generators_memory.py``
defaults there to width 1, DualAnoDiff at 512 px, CDM at 256 px (the papers' sizes).

Run: ``python benchmarks/generators_memory.py [--device cpu|cuda] [--width 0.5]
[--resolutions 64,128] [--batches 1,2,4]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import REPO  # noqa: E402  (puts the checkout on sys.path)

from daad.synthesis.diffusion import BaseModel  # noqa: E402

GENERATORS = ("dualanodiff", "cdm")
PAPER_RESOLUTION = {"dualanodiff": 512, "cdm": 256}
GIB = 1 << 30


@dataclass(frozen=True)
class Case:
    generator: str
    batch: int
    resolution: int
    mixed_precision: str
    """``no`` or a :data:`daad.synthesis.diffusion.MIXED_PRECISION` choice."""
    checkpointing: bool
    width: float
    device: str

    @property
    def label(self) -> str:
        return ("fp32" if self.mixed_precision == "no" else self.mixed_precision) + (" + ckpt" if self.checkpointing else "")


def channels(n: int, width: float) -> int:
    """``n × width`` rounded to a multiple of 32 (GroupNorm's 32 groups; 12 CLIP heads need a multiple of 12 too)."""
    return max(32, int(round(n * width / 32)) * 32)


def sd15_base(width: float, device: str, meta: bool = False) -> BaseModel:
    """An SD-1.5-shaped base model with random, frozen weights (``width`` 1: SD-1.5's sizes)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.helpers.tiny_sd import write_tiny_tokenizer

    text_width = max(96, int(round(768 * width / 96)) * 96)  # 12 heads of a multiple-of-8 size
    tokenizer_dir = Path(tempfile.mkdtemp(prefix="sd15-tokenizer-"))
    write_tiny_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    with torch.device("meta") if meta else torch.device("cpu"):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=tuple(channels(c, width) for c in (320, 640, 1280, 1280)),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=text_width,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=tuple(channels(c, width) for c in (128, 256, 512, 512)),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),  # CDM adds tokens to a tokenizer that matches its embedding
                hidden_size=text_width,
                intermediate_size=4 * text_width,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.eval()
        if not meta:
            module.to(device)
    return BaseModel(f"random SD-1.5 shape, width {width}", tokenizer, text_encoder, vae, unet, scheduler)


def synthetic_images(n: int, size: int = 160) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (RGB image, 0/1 mask) pairs: smooth random texture with a bright elongated defect."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(n):
        image = (rng.random((size, size, 3)) * 80 + 90).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y = int(rng.integers(20, size - 40))
        mask[y : y + 12, 20 : size - 20] = 1
        image[mask.astype(bool)] = 230
        pairs.append((image, mask))
    return pairs


def step_dualanodiff(case: Case, base: BaseModel, tmp: Path) -> None:
    from daad.synthesis.dualanodiff.data import TrainingPair
    from daad.synthesis.dualanodiff.train import TrainConfig, train

    pairs = [TrainingPair(f"synthetic/{i}", im, m, "scratch") for i, (im, m) in enumerate(synthetic_images(4))]
    config = TrainConfig(
        base.source, tmp / "dualanodiff", resolution=case.resolution, steps=1, batch_size=case.batch,
        mixed_precision=case.mixed_precision, gradient_checkpointing=case.checkpointing, foreground="full",
        checkpoint_every=0, progress=False,
    )
    train(config, pairs, base=base)


def step_cdm(case: Case, base: BaseModel, tmp: Path) -> None:
    from daad.synthesis.base import Synthesis
    from daad.synthesis.cdm.train import TrainConfig, train
    from daad.synthesis.output import write_generated

    rows = [Synthesis(im, m, "scratch", f"synthetic/n{i}", (f"synthetic/{i}",), {}) for i, (im, m) in enumerate(synthetic_images(4))]
    write_generated(tmp / "cai", rows, generator="cai", params={}, seed=0, evaluation="none", progress=False)
    config = TrainConfig(
        tmp / "cai", base.source, tmp / "cdm", resolution=case.resolution, steps=1, batch_size=case.batch,
        mixed_precision=case.mixed_precision, gradient_checkpointing=case.checkpointing, foreground="full",
    )
    train(config, progress=False, base=base)


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure(case: Case) -> dict:
    """Build the model, reset the high-water mark, run one step; bytes before and at peak."""
    from daad.synthesis.diffusion import mixed_precision_dtype

    base = sd15_base(case.width, case.device)
    half = mixed_precision_dtype(case.mixed_precision, torch.device(case.device))
    if half is not None:  # as train's load_base would load it: the frozen weights never in fp32
        base.to(case.device, half)
    step = {"dualanodiff": step_dualanodiff, "cdm": step_cdm}[case.generator]
    with tempfile.TemporaryDirectory() as tmp:
        if case.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step(case, base, Path(tmp))
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _status_kib("VmRSS") * 1024
            step(case, base, Path(tmp))
            peak = _status_kib("VmHWM") * 1024
    return {"before": before, "peak": peak}


def run_case(case: Case, threads: int) -> dict:
    """:func:`measure` in a fresh interpreter (a clean high-water mark and allocator)."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case.__dict__)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(lines[-1])


SD15_VOCABULARY = 49408


def full_size_state_bytes(generator: str, mixed: bool) -> tuple[int, int]:
    """(frozen weights, trainables × 4: weights, gradients, AdamW's two moments) in bytes of the
    full-size models, from their parameter counts (built on the meta device). Frozen weights
    are fp16/bf16 under mixed precision, else fp32 (CDM's text encoder stays fp32: its
    class rows live in its embedding); trainables are fp32."""
    from daad.synthesis.dualanodiff.attention import DualConfig, install
    from daad.synthesis.dualanodiff.checkpoint import add_text_encoder_lora

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    half = 2 if mixed else 4
    with torch.device("meta"):
        base = sd15_base(1.0, "meta", meta=True)
        hidden = base.text_encoder.config.hidden_size
        text = count(base.text_encoder) + (SD15_VOCABULARY - base.text_encoder.config.vocab_size) * hidden
        images = count(base.unet) + count(base.vae)
        if generator == "dualanodiff":
            trainable = count(install(base.unet, DualConfig(), dtype=torch.float32))
            trainable += sum(p.numel() for p in add_text_encoder_lora(base.text_encoder, DualConfig().rank))
            return (images + text) * half, trainable * 16
    return images * half + text * 4, 8 * hidden * 16  # at most 8 class rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, help="channel multiplier (default: 1 on CUDA, 0.5 on CPU)")
    parser.add_argument("--resolutions", help="comma list (default: the papers' sizes on CUDA, 64,128 on CPU)")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--mixed", help="mixed precision (default: auto on CUDA, bf16 on CPU)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each measurement")
    args = parser.parse_args()
    if args.case:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(measure(Case(**json.loads(args.case)))))
        return

    cuda = args.device == "cuda"
    width = args.width or (1.0 if cuda else 0.5)
    mixed = args.mixed or ("auto" if cuda else "bf16")
    batches = [int(b) for b in args.batches.split(",")]
    variants = [("no", False), (mixed, False), (mixed, True)]
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    print(f"# one training step, {where}, SD-1.5 shape × width {width}; peak = {'max_memory_allocated' if cuda else 'VmHWM'}")
    print("generator   | px  | precision      | " + " | ".join(f"batch {b}: before → peak (GiB)" for b in batches))
    for generator in args.generators.split(","):
        resolutions = (
            [int(r) for r in args.resolutions.split(",")] if args.resolutions
            else [PAPER_RESOLUTION[generator]] if cuda else [64, 128]
        )
        for resolution in resolutions:
            for precision, checkpointing in variants:
                cells = []
                for batch in batches:
                    case = Case(generator, batch, resolution, precision, checkpointing, width, args.device)
                    r = run_case(case, args.threads)
                    cells.append(r["error"][:40] if "error" in r else f"{r['before'] / GIB:6.2f} → {r['peak'] / GIB:6.2f}")
                print(f"{generator:11s} | {resolution:3d} | {case.label:14s} | " + " | ".join(f"{c:27s}" for c in cells), flush=True)
    print("\n# full size (width 1): weights and optimiser state alone, exact from the models' parameter counts")
    for generator in args.generators.split(","):
        for is_mixed in (False, True):
            frozen, trainable = full_size_state_bytes(generator, is_mixed)
            print(f"{generator:11s} | {'mixed' if is_mixed else 'fp32':5s} | frozen weights {frozen / GIB:5.2f} GiB + "
                  f"trainables, grads, AdamW {trainable / GIB:5.2f} GiB = {(frozen + trainable) / GIB:5.2f} GiB")


if __name__ == "__main__":
    main()
