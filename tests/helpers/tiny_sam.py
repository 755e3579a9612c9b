"""A tiny, randomly initialised SAM folder for tests, and SAM's mask computed straight from it.

`build_tiny_sam(dest)` saves a transformers `SamModel` (64-pixel input, a two-layer ViT; a few
tens of thousands of parameters) and its `SamProcessor` the way a hub snapshot holds them, so
that daad loads it as it would `facebook/sam-vit-base`. Every weight comes from
`torch.manual_seed(seed)`. `sam_mask(dest, image, box=..., point=...)` is the reference: the
model and processor called directly, as transformers documents SAM's use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import SamConfig, SamModel, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

SIZE = 64
PATCH = 8


def build_tiny_sam(dest: Path, seed: int = 0) -> Path:
    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=SIZE,
                           patch_size=PATCH, output_channels=16, global_attn_indexes=[1], window_size=4,
                           num_pos_feats=8, initializer_range=0.02),
        prompt_encoder_config=dict(hidden_size=16, image_size=SIZE, patch_size=PATCH, image_embedding_size=SIZE // PATCH,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16),
    )
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(dest)
    processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE}))
    processor.save_pretrained(dest)
    return dest


def sam_mask(folder: Path, image: np.ndarray, *, box: list[float] | None = None,
             point: list[float] | None = None) -> np.ndarray:
    """SAM's single-mask output for an ``[x, y, w, h]`` box or an ``[x, y]`` click on the RGB ``image``."""
    model = SamModel.from_pretrained(folder, local_files_only=True).eval()
    processor = SamProcessor.from_pretrained(folder, local_files_only=True)
    if box is not None:
        x, y, w, h = box
        inputs = processor(images=image, input_boxes=[[[x, y, x + w, y + h]]], return_tensors="pt")
    else:
        inputs = processor(images=image, input_points=[[[point]]], input_labels=[[[1]]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    return masks[0][0, 0].numpy()
