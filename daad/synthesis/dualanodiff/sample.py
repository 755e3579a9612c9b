"""Sample DualAnoDiff pairs into a generated dataset, top to bottom.

1. arguments (:class:`SampleConfig`, the paper's defaults: 100 DDIM steps, guidance 2.5;
   with BCM the paper uses 50 steps and guidance 2.0);
2. the checkpoint loaded into a fresh pipeline (fp16 on CUDA unless ``precision`` says
   otherwise), its fingerprint taken;
3. per batch of pairs: backgrounds I_b = (1 − M_f) × I from target normal images (BCM), each
   pair's background and noise drawn from its own generators seeded ``[seed, pair]`` (so a
   run split across GPUs by batches gives the same rows, :mod:`daad.distributed.sampling`),
   the pairs sampled, each mask segmented from its part image;
4. rows written with :func:`daad.synthesis.output.write_generated` (generator ``dualanodiff``,
   prompts, checkpoint fingerprint, seed, source ids, inherited licences).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daad.errors import LeakageError
from daad.registry.exclusion import NO_EVALUATION
from daad.synthesis.base import Synthesis, Target
from daad.synthesis.diffusion import pick_device, sampling_dtype, torch_generator
from daad.synthesis.dualanodiff.checkpoint import checkpoint_fingerprint, read_info
from daad.synthesis.dualanodiff.data import background_image, to_tensor
from daad.synthesis.dualanodiff.masks import DEFAULT_THRESHOLD, PartMasker
from daad.synthesis.dualanodiff.pipeline import DualAnoDiffPipeline
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.output import GeneratedSummary, write_generated

NAME = "dualanodiff"


@dataclass
class SampleConfig:
    checkpoint: Path
    output_dir: Path
    num_pairs: int = 500
    num_inference_steps: int = 100
    guidance_scale: float = 2.5
    batch_size: int = 4
    seed: int = 0
    mask_method: str = "threshold"
    mask_threshold: int = DEFAULT_THRESHOLD
    rembg_model: Path | None = None
    foreground: str = "auto"
    base_model: str | None = None
    evaluation: str = NO_EVALUATION
    device: str | None = None
    precision: str = "auto"
    """Weights' dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``."""
    progress: bool = True


class DualAnoDiffGenerator:
    """A trained checkpoint as a :class:`daad.synthesis.base.Generator`."""

    name = NAME

    def __init__(self, config: SampleConfig) -> None:
        self.config = config
        self.info = read_info(config.checkpoint)
        self.fingerprint = checkpoint_fingerprint(config.checkpoint)
        device = pick_device(config.device)
        self.dtype = sampling_dtype(config.precision, device)
        self.pipeline = DualAnoDiffPipeline.from_checkpoint(
            config.checkpoint, base_model=config.base_model, device=device, dtype=self.dtype
        )
        self.masker = PartMasker(config.mask_method, config.mask_threshold, config.rembg_model)
        self.foreground = ForegroundExtractor(config.foreground, config.rembg_model)
        self.skipped_empty = 0
        if self.info.split:
            leaked = set(self.info.source_ids) & set(self.info.split["held_out_ids"])
            if leaked:
                raise LeakageError(f"checkpoint {config.checkpoint} was trained on held-out records {sorted(leaked)[:3]}")

    def params(self) -> dict[str, Any]:
        c = self.config
        return {
            "checkpoint_fingerprint": self.fingerprint,
            "base_model": c.base_model or self.info.base_model,
            "prompts": {"whole": self.info.prompts.whole, "part": self.info.prompts.part},
            "dual": self.info.dual.to_json(),
            "resolution": self.info.resolution,
            "training_ids": self.info.training_ids,
            "split": self.info.split,
            "num_pairs": c.num_pairs,
            "num_inference_steps": c.num_inference_steps,
            "guidance_scale": c.guidance_scale,
            "dtype": str(self.dtype).removeprefix("torch."),
            "mask": self.masker.params(),
            "foreground": self.foreground.method,
        }

    def generate(
        self, targets: Sequence[Target], view: object, seed: int, pairs: range | None = None
    ) -> Iterator[Synthesis]:
        """The rows of ``pairs`` (default: all ``num_pairs``); ``targets`` give BCM backgrounds (none:
        no background condition). Pair ``p`` draws its background and its noise from its own
        generators, seeded ``[seed, p]``, so a range of pairs starting at a multiple of
        ``batch_size`` gives the rows the whole run gives for them (how runs are split across GPUs)."""
        use_backgrounds = len(targets) > 0 and self.info.dual.bcm
        c, res = self.config, self.info.resolution
        pairs = range(c.num_pairs) if pairs is None else pairs
        for start in range(pairs.start, pairs.stop, c.batch_size):
            batch = range(start, min(start + c.batch_size, pairs.stop))
            n = len(batch)
            streams = [np.random.default_rng([seed, p]) for p in batch]
            chosen: Sequence[Target | None] = (
                [targets[int(r.integers(len(targets)))] for r in streams] if use_backgrounds else [None] * n
            )
            generators = [torch_generator(int(r.integers(2**62))) for r in streams]
            backgrounds = (
                torch.stack([to_tensor(background_image(t.id, t.image, self.foreground), res) for t in chosen])
                if use_backgrounds
                else None
            )
            made = self.pipeline(
                n,
                generator=generators,
                num_inference_steps=c.num_inference_steps,
                guidance_scale=c.guidance_scale,
                backgrounds=backgrounds,
            )
            for i, target in enumerate(chosen):
                mask = self.masker(made.part[i])
                if not mask.any():
                    self.skipped_empty += 1
                    continue
                yield Synthesis(
                    image=made.whole[i],
                    mask=mask,
                    anomaly_class=self.info.anomaly_class,
                    target_id=target.id if target else "",
                    source_ids=tuple(self.info.source_ids),
                    details={"pair": start + i, "checkpoint": self.fingerprint, "background": target is not None},
                )


def sample(config: SampleConfig, targets: Sequence[Target] = ()) -> tuple[GeneratedSummary, int]:
    """Write ``config.num_pairs`` sampled pairs (minus empty masks) to ``config.output_dir``.

    Returns the writer's summary and the number of pairs skipped for an empty mask.
    """
    generator = DualAnoDiffGenerator(config)
    licences = dict(generator.info.licences) | {t.id: t.licence for t in targets}
    summary = write_generated(
        Path(config.output_dir),
        generator.generate(targets, None, config.seed),
        generator=NAME,
        params=generator.params(),
        seed=config.seed,
        evaluation=config.evaluation,
        input_licences=licences,
        progress=config.progress,
        total=config.num_pairs,
    )
    return summary, generator.skipped_empty
