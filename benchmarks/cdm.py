"""CDM speed on the tiny random SD model: seconds per training step and per sampled image.

Baselines from the same run: a bare UNet forward + backward on the same batch (training),
and diffusers' own ``StableDiffusionPipeline`` text-to-image call with the same steps,
batch and guidance (sampling); the ratio is CDM's overhead (text encoder with the learned
and spatial tokens, the mask half of each training step, the learnt mask generator's own
denoising run per image, latent blending, compositing).

Run: ``python benchmarks/cdm.py [--device cuda] [--resolution 64]``. Prints figures;
asserts nothing. With CUDA it also prints peak GPU memory of sampling; the figures
for a real SD-1.5 at 256/512 px need that model and a GPU (not part of this script).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: E402, F401  (puts the checkout on sys.path)

import torch  # noqa: E402

from daad.synthesis.cdm.sample import CDM, SampleConfig  # noqa: E402
from daad.synthesis.cdm.train import TrainConfig, train  # noqa: E402
from daad.synthesis.diffusion import load_base, pick_device  # noqa: E402
from tests.helpers.tiny_sd import build_tiny_sd  # noqa: E402
from tests.test_cdm import kolektor_targets, make_cai_dataset  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_seconds(work: Path, resolution: int, batch: int, steps: int, device: str | None) -> float:
    """Seconds per step: two runs (2 and 2 + steps steps), the difference divided by steps."""
    times = []
    for n in (2, 2 + steps):
        config = TrainConfig(
            data=work / "cai", base_model=str(work / "sd"), output=work / f"train-{n}", resolution=resolution,
            steps=n, batch_size=batch, checkpoint_every=10_000, foreground="classical", device=device,
        )
        start = time.perf_counter()
        train(config, progress=False)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps


def unet_step_seconds(work: Path, resolution: int, batch: int, steps: int, device: torch.device) -> float:
    base = load_base(str(work / "sd"), device=device)
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    latents = torch.randn(batch, 4, resolution // factor, resolution // factor, device=device)
    hidden = torch.randn(batch, base.tokenizer.model_max_length, base.text_encoder.config.hidden_size, device=device, requires_grad=True)
    t = torch.full((batch,), 500, device=device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        base.unet(latents, t, hidden).sample.square().mean().backward()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--per-target", type=int, default=4)
    args = parser.parse_args()
    device = pick_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="daad-cdm-bench-"))
    make_cai_dataset(work)
    build_tiny_sd(work / "sd")
    print(f"device {device}, tiny SD, {args.resolution} px, batch {args.batch}, threads {torch.get_num_threads()}")

    step = train_seconds(work, args.resolution, args.batch, args.train_steps, args.device)
    bare = unet_step_seconds(work, args.resolution, args.batch, args.train_steps, device)
    print(f"train: {step:.4f} s/step; bare UNet fwd+bwd {bare:.4f} s/step; ratio {step / bare:.2f}")

    cdm = CDM(SampleConfig(
        checkpoint=work / f"train-{2 + args.train_steps}", per_target=args.per_target, steps=args.sample_steps,
        batch_size=args.batch, foreground="classical", device=args.device,
    ))
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(work / "sd"), safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    targets = kolektor_targets(args.targets, skip=40)
    list(cdm.generate(targets[:1], None, seed=0))  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    rows = list(cdm.generate(targets, None, seed=0))
    sync(device)
    per_image = (time.perf_counter() - start) / len(rows)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    prompt = cdm.info["prompt"].format(token="scratch")
    generator = torch.Generator("cpu").manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for _ in range(0, len(rows), args.batch):
        pipe([prompt] * args.batch, height=cdm.info["resolution"], width=cdm.info["resolution"],
             num_inference_steps=args.sample_steps, guidance_scale=7.5, generator=generator, output_type="np")
    sync(device)
    plain = (time.perf_counter() - start) / (len(range(0, len(rows), args.batch)) * args.batch)
    print(f"sample: {per_image:.4f} s/image ({len(rows)} rows, {args.sample_steps} steps); "
          f"plain text-to-image {plain:.4f} s/image; ratio {per_image / plain:.2f}")
    if peak is not None:
        print(f"peak GPU memory while sampling (tiny model): {peak:.0f} MiB")
    else:
        print("GPU memory at 256/512 px with SD-1.5: not measured (no CUDA device in this run)")


if __name__ == "__main__":
    main()
