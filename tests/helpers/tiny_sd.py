"""A tiny, randomly initialised Stable-Diffusion-1.5-style diffusers folder for tests.

`build_tiny_sd(dest)` saves a UNet2DConditionModel, an AutoencoderKL, a CLIPTextModel
(a few hundred thousand parameters in all), a CLIPTokenizer built from a small local
byte-level vocabulary, and a DDIM scheduler config (SD-1.5's betas), laid out like a hub SD-1.5
snapshot so that `StableDiffusionPipeline.from_pretrained(dest)` works offline.
Every weight comes from `torch.manual_seed(seed)`: the same seed gives the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TOKENIZER_MAX_LENGTH = 77
CROSS_ATTENTION_DIM = 32
LATENT_CHANNELS = 4
#: Whole words the tiny vocabulary knows, beyond its single characters.
WORDS = ("a", "vfx", "with", "sks", "photo", "of", "steel", "crack", "scratch")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (the GPT-2 scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_tiny_tokenizer(dest: Path) -> None:
    """A byte-level CLIP BPE vocab/merges: every byte (with and without `</w>`) plus WORDS."""
    dest.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in WORDS:
        # merge left to right: ((a b) c) ... with the last symbol carrying </w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{current} {piece}")
            current = current + piece
            if current not in tokens:
                tokens.append(current)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (dest / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")


def build_tiny_sd(dest: Path, seed: int = 0) -> Path:
    """Save a tiny SD-1.5-style diffusers folder under `dest` and return `dest`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dest = Path(dest)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=32,
    )
    write_tiny_tokenizer(dest / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(dest / "tokenizer", model_max_length=TOKENIZER_MAX_LENGTH)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet.save_pretrained(dest / "unet")
    vae.save_pretrained(dest / "vae")
    text_encoder.save_pretrained(dest / "text_encoder")
    tokenizer.save_pretrained(dest / "tokenizer")
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(dest / "scheduler")
    (dest / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.42.0",
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
                "safety_checker": [None, None],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return dest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny SD-1.5-style diffusers folder, built once per test session."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")
