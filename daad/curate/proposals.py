"""Mask proposals for ``daad curate annotate`` from a local promptable segmentation model (SAM).

A proposal is SAM's mask for one prompt on a record's image: a box ``[x, y, w, h]`` around the
anomaly or a click ``[x, y]`` on it, in pixels of the image as daad decodes it (EXIF orientation
applied). A prompt comes from the user's prompts file (JSONL, one ``{"id": ..., "box": [...]}``
or ``{"id": ..., "point": [...]}`` a line), else from the record's ``bbox``. The model is
transformers' ``SamModel`` + ``SamProcessor``, loaded from a folder on disk only
(``local_files_only``; e.g. a ``facebook/sam-vit-base`` snapshot saved there): daad never
downloads one, and a folder it cannot load as SAM is refused before anything is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daad.errors import DaadError
from daad.record import Record

SAM_VERSION = "daad-sam-proposal"
"""Label Studio model version of SAM's proposals (predictions, never read back as annotations)."""


class ProposalModelError(DaadError):
    """A SAM model folder is missing or cannot be loaded as SAM."""

    def __init__(self, folder: Path | str, reason: str) -> None:
        self.folder, self.reason = Path(folder), reason
        super().__init__(f"SAM model {folder}: {reason}; give --sam-model a local folder with the model's "
                         "config.json, weights and processor config (e.g. a facebook/sam-vit-base snapshot; daad "
                         "never downloads one)")


class PromptsError(DaadError):
    """Lines of a prompts file that name no known record or hold no valid box or point."""

    def __init__(self, path: Path | str, problems: list[tuple[int, str]]) -> None:
        self.path, self.problems = Path(path), problems
        shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{path}: {len(problems)} bad prompt line(s): {shown}{more}; nothing was sent")


@dataclass(frozen=True)
class Prompt:
    """Where the anomaly is on the image, in pixels: a box ``(x, y, w, h)`` or a click ``(x, y)``."""

    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None


def read_prompts(path: Path, records: Mapping[str, Record]) -> dict[str, Prompt]:
    """The prompts of the JSONL file ``path`` by record id, checked against ``records`` (the
    registry's, by id): raises :class:`PromptsError` listing every bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptsError(path, [(0, f"cannot read the file: {exc}")]) from None
    prompts: dict[str, Prompt] = {}
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            prompt_id, prompt = _parse(line, records)
        except ValueError as exc:
            problems.append((number, str(exc)))
            continue
        if prompt_id in prompts:
            problems.append((number, f"a second prompt for {prompt_id!r}"))
        prompts[prompt_id] = prompt
    if problems:
        raise PromptsError(path, problems)
    return prompts


def _parse(line: str, records: Mapping[str, Record]) -> tuple[str, Prompt]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError('expected an object {"id": RECORD_ID, "box": [x, y, w, h]} or {"id": ..., "point": [x, y]}')
    record = records.get(obj["id"])
    if record is None:
        raise ValueError(f"unknown record id {obj['id']!r}")
    if set(obj) not in ({"id", "box"}, {"id", "point"}):
        raise ValueError(f"{obj['id']}: expected the keys id and one of box, point; found {', '.join(sorted(obj))}")
    kind = "box" if "box" in obj else "point"
    values = obj[kind]
    size = 4 if kind == "box" else 2
    if not isinstance(values, list) or len(values) != size or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{obj['id']}: {kind} must be {size} finite numbers, got {values!r}")
    x, y = values[:2]
    if x < 0 or y < 0 or (kind == "box" and (values[2] <= 0 or values[3] <= 0)):
        raise ValueError(f"{obj['id']}: {kind} {values} has a negative corner or an empty size")
    width, height = record.width or math.inf, record.height or math.inf  # unknown size: any
    if not (x + values[2] <= width and y + values[3] <= height if kind == "box" else x < width and y < height):
        raise ValueError(f"{obj['id']}: {kind} {values} is outside the {record.width}x{record.height} image")
    return obj["id"], Prompt(box=tuple(values)) if kind == "box" else Prompt(point=tuple(values))


def prompt_for(record: Record, prompts: Mapping[str, Prompt]) -> Prompt | None:
    """``record``'s prompt: the prompts file's, else its ``bbox``; ``None`` when it has neither."""
    if record.id in prompts:
        return prompts[record.id]
    return Prompt(box=tuple(record.bbox)) if record.bbox is not None else None


class SamProposer:
    """SAM (transformers' ``SamModel`` and ``SamProcessor``) loaded from a local folder."""

    def __init__(self, folder: Path, model, processor, device) -> None:
        self.folder, self.model, self.processor, self.device = folder, model, processor, device

    @classmethod
    def load(cls, folder: Path | str, device: str | None = None) -> SamProposer:
        """The SAM model in ``folder`` on ``device`` (default: CPU); :class:`ProposalModelError` when
        ``folder`` does not hold one, or holds one with missing weights."""
        import torch
        from transformers import AutoConfig, SamConfig, SamModel, SamProcessor
        from transformers.utils import logging

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ProposalModelError(folder, "is not a folder")
        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # no "Loading weights" bar on the command's output
        try:  # transformers and safetensors raise many types for a folder that is not a model
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            if not isinstance(config, SamConfig):
                raise ProposalModelError(folder, f"holds a {config.model_type!r} model, not SAM")
            model, info = SamModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
            processor = SamProcessor.from_pretrained(folder, local_files_only=True)
        except ProposalModelError:
            raise
        except Exception as exc:
            raise ProposalModelError(folder, f"cannot be loaded: {type(exc).__name__}: {exc}") from None
        finally:
            if bars:
                logging.enable_progress_bar()
        if info["missing_keys"] or info["mismatched_keys"]:
            missing = sorted(info["missing_keys"]) + [str(k) for k in info["mismatched_keys"]]
            raise ProposalModelError(folder, f"weights missing or of the wrong shape: {', '.join(missing[:5])}")
        device = torch.device(device or "cpu")
        return cls(folder, model.to(device).eval(), processor, device)

    def mask(self, image: np.ndarray, prompt: Prompt) -> np.ndarray:
        """SAM's one mask (``bool``, the image's height x width) for ``prompt`` on the RGB ``image``."""
        import torch

        if prompt.box is not None:
            x, y, w, h = prompt.box
            kwargs = {"input_boxes": [[[x, y, x + w, y + h]]]}
        else:
            kwargs = {"input_points": [[[list(prompt.point)]]], "input_labels": [[[1]]]}
        inputs = self.processor(images=image, return_tensors="pt", **kwargs)
        with torch.inference_mode():
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()}, multimask_output=False)
        masks = self.processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])
        return masks[0][0, 0].numpy().astype(bool)
