"""DualAnoDiff speed: seconds per training step and per sampled pair, CPU and (when present) CUDA.

Model: the tiny random SD-1.5-style model of the tests (or ``--base-model``), trained on real
SD-saliency-900 scratches. Same-run baselines: a training step is compared with a plain
base-UNet forward + backward of the same batch (standard diffusers processors, no LoRA, SAIM
or BCM), a sampled pair with plain ``StableDiffusionPipeline`` sampling two images (the
same number of images, steps and guidance).

Run: ``python benchmarks/dualanodiff.py [--steps 6] [--resolution 64]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import common  # noqa: E402, F401  (puts the checkout on sys.path)

from daad.synthesis.diffusion import load_base  # noqa: E402
from daad.synthesis.dualanodiff.pipeline import DualAnoDiffPipeline  # noqa: E402
from daad.synthesis.dualanodiff.train import TrainConfig, train  # noqa: E402
from tests.helpers.tiny_sd import build_tiny_sd  # noqa: E402
from tests.test_dualanodiff import NAMES, real_pair  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_per_train_step(base_model: str, out: Path, device: str, args) -> float:
    """(time of 1 + N steps − time of 1 step) / N: loading and data preparation cancel out."""
    pairs = [real_pair(n) for n in NAMES]
    times = []
    for steps in (1, 1 + args.steps):
        config = TrainConfig(base_model, out / f"run{steps}", resolution=args.resolution, steps=steps,
                             batch_size=args.batch, rank=args.rank, foreground="classical",
                             checkpoint_every=0, device=device, progress=False)
        start = time.perf_counter()
        train(config, pairs)
        sync(device)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / args.steps


def seconds_plain_unet_step(base_model: str, device: str, args) -> float:
    base = load_base(base_model, device=device)
    base.unet.requires_grad_(True)
    size = args.resolution // (2 ** (len(base.vae.config.block_out_channels) - 1))
    x = torch.randn(2 * args.batch, 4, size, size, device=device)
    emb = base.encode_prompts(["a vfx with sks", "sks"] * args.batch).detach()
    t = torch.full((2 * args.batch,), 500, device=device)
    base.unet(x, t, emb).sample.mean().backward()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        base.unet(x, t, emb).sample.mean().backward()
    sync(device)
    return (time.perf_counter() - start) / args.steps


def seconds_per_pair(checkpoint: Path, device: str, args) -> float:
    pipe = DualAnoDiffPipeline.from_checkpoint(checkpoint, device=device)
    backgrounds = torch.zeros(args.batch, 3, args.resolution, args.resolution)
    call = dict(generator=torch.Generator().manual_seed(0), num_inference_steps=args.sample_steps,
                guidance_scale=2.5, backgrounds=backgrounds)
    pipe(args.batch, **call)  # warm-up
    sync(device)
    start = time.perf_counter()
    pipe(args.batch, **call)
    sync(device)
    return (time.perf_counter() - start) / args.batch


def seconds_plain_pair(base_model: str, device: str, args) -> float:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base_model, safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_images_per_prompt=2 * args.batch, num_inference_steps=args.sample_steps, guidance_scale=2.5,
                height=args.resolution, width=args.resolution, output_type="np")
    pipe("a vfx with sks", **call)
    sync(device)
    start = time.perf_counter()
    pipe("a vfx with sks", **call)
    sync(device)
    return (time.perf_counter() - start) / args.batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", help="diffusers folder (default: a tiny random model built here)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--sample-steps", type=int, default=10, help="denoising steps per sample")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="pairs per training/sampling batch")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        base_model = args.base_model or str(build_tiny_sd(Path(tmp) / "tiny-sd"))
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        print(f"model {base_model if args.base_model else 'tiny random SD'}, {args.resolution} px, "
              f"batch {args.batch} pairs, rank {args.rank}, {args.sample_steps} sampling steps, "
              f"torch threads {torch.get_num_threads()}")
        for device in devices:
            name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
            step = seconds_per_train_step(base_model, Path(tmp) / device, device, args)
            plain_step = seconds_plain_unet_step(base_model, device, args)
            pair = seconds_per_pair(Path(tmp) / device / f"run{1 + args.steps}", device, args)
            plain_pair = seconds_plain_pair(base_model, device, args)
            print(f"[{name}] train: {step:.4f} s/step (plain UNet fwd+bwd of the same batch {plain_step:.4f} s, "
                  f"ratio {step / plain_step:.2f}x)")
            print(f"[{name}] sample: {pair:.4f} s/pair (plain SD, 2 images: {plain_pair:.4f} s, "
                  f"ratio {pair / plain_pair:.2f}x)")


if __name__ == "__main__":
    main()
