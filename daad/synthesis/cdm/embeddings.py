"""The anomaly embeddings CDM learns: one textual-inversion token per class (``<crack>``).

As in textual inversion (and AnomalyDiffusion's anomaly embedding), each class gets a
new token in the tokenizer, whose embedding starts as the mean embedding of the class
name's own tokens. The new rows live in their own parameter beside the frozen
vocabulary (:class:`ClassTokenEmbedding`), so the optimiser sees only them and every
pretrained weight stays bit-identical by construction.

Each class's row is saved in diffusers' textual-inversion format (one
``{token: tensor}`` safetensors file per class), so
``StableDiffusionPipeline.load_textual_inversion`` loads it into any fresh pipeline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from daad.synthesis.cdm.errors import CDMCheckpointError


def class_token(anomaly_class: str) -> str:
    return f"<{anomaly_class}>"


def embedding_file(folder: Path, anomaly_class: str) -> Path:
    return Path(folder) / f"{anomaly_class}.safetensors"


class ClassTokenEmbedding(torch.nn.Module):
    """The text encoder's token embedding: the frozen vocabulary plus trainable class rows."""

    def __init__(self, vocabulary: torch.nn.Embedding, rows: torch.Tensor, classes: tuple[str, ...]) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.rows = torch.nn.Parameter(rows.detach().clone().float())
        self.classes = classes

    @property
    def weight(self) -> torch.Tensor:
        """The full matrix (vocabulary then class rows), for code that reads ``.weight``."""
        return torch.cat([self.vocabulary.weight, self.rows.to(self.vocabulary.weight.dtype)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        size = self.vocabulary.num_embeddings
        embedded = self.vocabulary(input_ids.clamp(max=size - 1))
        new = self.rows.to(embedded.dtype)[(input_ids - size).clamp(min=0)]
        return torch.where((input_ids >= size).unsqueeze(-1), new, embedded)

    def save(self, folder: Path) -> list[Path]:
        """One diffusers textual-inversion file per class under ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for name, row in zip(self.classes, self.rows.detach().cpu(), strict=True):
            file = embedding_file(folder, name)
            save_file({class_token(name): row.clone().contiguous()}, str(file))
            files.append(file)
        return files

    @torch.no_grad()
    def load(self, folder: Path) -> None:
        """Set the class rows from files written by :meth:`save` (resuming a run)."""
        for i, name in enumerate(self.classes):
            file = embedding_file(folder, name)
            if not file.is_file():
                raise CDMCheckpointError(f"embedding file {file} of class {name!r} does not exist")
            self.rows[i] = load_file(str(file))[class_token(name)].to(self.rows.device)


def add_class_tokens(tokenizer, text_encoder: torch.nn.Module, classes: tuple[str, ...]) -> ClassTokenEmbedding:
    """Add ``<class>`` tokens to ``tokenizer`` and a :class:`ClassTokenEmbedding` to ``text_encoder``."""
    vocabulary = text_encoder.get_input_embeddings()
    size = vocabulary.num_embeddings
    tokens = [class_token(c) for c in classes]
    if len(tokenizer) != size:
        raise CDMCheckpointError(f"tokenizer has {len(tokenizer)} tokens but the text encoder {size} embeddings")
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise CDMCheckpointError(f"the tokenizer already holds one of {tokens}")
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if ids != list(range(size, size + len(tokens))):
        raise CDMCheckpointError(f"class tokens got ids {ids}, expected {size}..{size + len(tokens) - 1}")
    with torch.no_grad():
        rows = torch.stack([vocabulary.weight[tokenizer.encode(c, add_special_tokens=False)].float().mean(0) for c in classes])
    embedding = ClassTokenEmbedding(vocabulary, rows, tuple(classes))
    text_encoder.set_input_embeddings(embedding)
    return embedding
