"""A DualAnoDiff checkpoint folder: trainable weights (safetensors) + what they were trained on.

``dualanodiff_layers.safetensors`` holds every processor's LoRA sets, SAIM and BCM weights;
``text_encoder_lora.safetensors`` the text-encoder LoRA (τθ, peft) when it was trained;
``dualanodiff.json`` the :class:`DualConfig`, prompts, base model, resolution, class,
training ids and licences, the few-shot split when there was one, and the step. The
fingerprint of a checkpoint is the sha256 of its weight files
(:func:`daad.synthesis.diffusion.fingerprint`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from daad.atomic import write_atomically
from daad.errors import DaadError
from daad.synthesis.diffusion import fingerprint, save_tensors
from daad.synthesis.dualanodiff.attention import DualConfig

WEIGHTS_FILE = "dualanodiff_layers.safetensors"
TEXT_ENCODER_FILE = "text_encoder_lora.safetensors"
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
CONFIG_FILE = "dualanodiff.json"


class CheckpointError(DaadError):
    """A checkpoint folder is missing or does not match the model it is loaded into."""


@dataclass(frozen=True)
class Prompts:
    """Nested prompts: the whole image names the rare token the part prompt is made of."""

    whole: str = "a vfx with sks"
    part: str = "sks"


@dataclass
class CheckpointInfo:
    base_model: str
    dual: DualConfig
    prompts: Prompts
    resolution: int
    anomaly_class: str | None
    training_ids: list[str]
    source_ids: list[str]
    licences: dict[str, str] = field(default_factory=dict)
    split: dict | None = None
    step: int = 0
    text_encoder_lora: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> CheckpointInfo:
        return cls(**obj | {"dual": DualConfig(**obj["dual"]), "prompts": Prompts(**obj["prompts"])})


def add_text_encoder_lora(text_encoder: nn.Module, rank: int) -> list[nn.Parameter]:
    """Inject a peft LoRA into the text encoder's attention projections; return its (float32) weights.

    peft's own injection (``inject_adapter_in_model``), not transformers' ``add_adapter``,
    whose peft integration depends on matching transformers/peft releases. Only the LoRA
    weights are trainable; they are float32 even when the encoder is in half precision.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(TEXT_ENCODER_TARGETS))
    inject_adapter_in_model(config, text_encoder)
    params = [p for name, p in text_encoder.named_parameters() if "lora_" in name]
    for param in text_encoder.parameters():
        param.requires_grad_(False)
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    return params


def save_checkpoint(folder: Path, layers: nn.ModuleDict, info: CheckpointInfo, text_encoder: nn.Module | None = None) -> str:
    """Write weights (and the text-encoder LoRA when trained) and info into ``folder``; return the fingerprint."""
    save_tensors(layers.state_dict(), folder / WEIGHTS_FILE)
    if info.text_encoder_lora:
        from peft.utils import get_peft_model_state_dict

        save_tensors(get_peft_model_state_dict(text_encoder, save_embedding_layers=False), folder / TEXT_ENCODER_FILE)
    write_atomically(folder / CONFIG_FILE, [json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n"])
    return checkpoint_fingerprint(folder)


def read_info(folder: Path) -> CheckpointInfo:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a DualAnoDiff checkpoint: {CONFIG_FILE} is missing")
    return CheckpointInfo.from_json(json.loads(path.read_text(encoding="utf-8")))


def load_weights(folder: Path, layers: nn.ModuleDict, text_encoder: nn.Module | None = None) -> None:
    """Load saved weights into installed processors (and an adapted text encoder); every key must match."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    missing, unexpected = layers.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if text_encoder is not None:
        from peft.utils import set_peft_model_state_dict

        lora_file = Path(folder) / TEXT_ENCODER_FILE
        if not lora_file.is_file():
            raise CheckpointError(f"{folder} has no {TEXT_ENCODER_FILE} although it records a trained text encoder")
        result = set_peft_model_state_dict(text_encoder, load_file(lora_file))
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise CheckpointError(f"{lora_file} does not match: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def checkpoint_fingerprint(folder: Path) -> str:
    """sha256 over the checkpoint's weight files (processors, and the text-encoder LoRA if any)."""
    return fingerprint(p for p in (Path(folder) / WEIGHTS_FILE, Path(folder) / TEXT_ENCODER_FILE) if p.is_file())
