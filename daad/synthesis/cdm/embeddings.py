"""The text-side embeddings CDM learns, all in the text encoder's token embedding.

As in AnomalyDiffusion:

- **anomaly embedding**: each anomaly class gets a token ``<crack>`` of
  :data:`VECTORS_PER_TOKEN` learned vectors (``<crack> <crack>_1 <crack>_2 <crack>_3`` in
  the tokenizer, diffusers' multi-vector textual-inversion layout), each starting as the
  mean embedding of the class name's own tokens;
- **mask embedding**: each class also gets ``<crack-mask>``, learned on the class's masks
  alone (the mask generator's text-to-mask prompt, :mod:`~daad.synthesis.cdm.maskgen`);
- **spatial-aware embedding**: :data:`SPATIAL_TOKEN` holds :data:`VECTORS_PER_TOKEN`
  slots whose vectors are not stored but computed from the anomaly mask of each prompt
  by :class:`SpatialEncoder`, so generation knows where the anomaly is.

The learned rows live in their own parameter beside the frozen vocabulary
(:class:`ClassTokenEmbedding`), so every pretrained weight stays bit-identical. Each
token is saved in diffusers' textual-inversion format (one ``{token: V x D}`` safetensors
file), so ``StableDiffusionPipeline.load_textual_inversion`` loads it into any pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from daad.synthesis.cdm.errors import CDMCheckpointError
from daad.synthesis.diffusion import save_tensors

VECTORS_PER_TOKEN = 4
SPATIAL_TOKEN = "<where>"
SPATIAL_FILE = "spatial_encoder.safetensors"


def class_token(anomaly_class: str) -> str:
    return f"<{anomaly_class}>"


def mask_token(anomaly_class: str) -> str:
    return f"<{anomaly_class}-mask>"


def token_names(token: str, vectors: int = VECTORS_PER_TOKEN) -> list[str]:
    """The tokenizer entries of a multi-vector token (diffusers' naming)."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def spelled(token: str, vectors: int = VECTORS_PER_TOKEN) -> str:
    """``token`` written out as all its vectors, for a prompt."""
    return " ".join(token_names(token, vectors))


def embedding_file(folder: Path, token: str) -> Path:
    return Path(folder) / f"{token.strip('<>')}.safetensors"


class SpatialEncoder(nn.Module):
    """The anomaly mask (``B x 1 x R x R``, 0/1) -> :data:`VECTORS_PER_TOKEN` text vectors.

    AnomalyDiffusion uses a pSp ResNet encoder; this is a small strided CNN (4 stages,
    then a linear map per vector), enough for where and how large the mask is. The last
    layer starts at zero, so an untrained encoder adds nothing but the position encodings.
    """

    def __init__(self, dim: int, vectors: int = VECTORS_PER_TOKEN, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.vectors = vectors
        self.out = nn.Linear(channels * 16, vectors * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(masks.float())).view(masks.shape[0], self.vectors, -1)


class ClassTokenEmbedding(nn.Module):
    """The text encoder's token embedding: frozen vocabulary, learned token rows, spatial slots."""

    def __init__(self, vocabulary: nn.Embedding, rows: torch.Tensor, tokens: tuple[str, ...], vectors: int) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.rows = nn.Parameter(rows.detach().clone().float())
        self.tokens = tokens
        self.vectors = vectors
        self.spatial: torch.Tensor | None = None
        """``B x V x D`` vectors for the :data:`SPATIAL_TOKEN` slots of the current call (see :meth:`where`)."""

    @property
    def weight(self) -> torch.Tensor:
        """The full matrix (vocabulary then learned rows), for code that reads ``.weight``."""
        return torch.cat([self.vocabulary.weight, self.rows.to(self.vocabulary.weight.dtype)])

    @property
    def spatial_ids(self) -> range:
        start = self.vocabulary.num_embeddings + len(self.rows)
        return range(start, start + self.vectors)

    @contextmanager
    def where(self, vectors: torch.Tensor) -> Iterator[None]:
        """Inside: the spatial slots of row ``b`` of a text-encoder call take ``vectors[b]``."""
        self.spatial = vectors
        try:
            yield
        finally:
            self.spatial = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        size = self.vocabulary.num_embeddings
        embedded = self.vocabulary(input_ids.clamp(max=size - 1))
        learned = self.rows.to(embedded.dtype)[(input_ids - size).clamp(0, len(self.rows) - 1)]
        out = torch.where(((input_ids >= size) & (input_ids < size + len(self.rows))).unsqueeze(-1), learned, embedded)
        slot = input_ids - self.spatial_ids.start
        in_slot = (slot >= 0) & (slot < self.vectors)
        if in_slot.any():
            if self.spatial is None or self.spatial.shape[0] != input_ids.shape[0]:
                raise ValueError(f"a prompt holds {SPATIAL_TOKEN} but no spatial vectors were given for its batch")
            picked = torch.gather(
                self.spatial.to(embedded.dtype), 1, slot.clamp(0, self.vectors - 1).unsqueeze(-1).expand(*slot.shape, out.shape[-1])
            )
            out = torch.where(in_slot.unsqueeze(-1), picked, out)
        return out

    def save(self, folder: Path) -> list[Path]:
        """One diffusers textual-inversion file (``V x D``) per learned token under ``folder``."""
        return [save_tensors({token: self.rows[i * self.vectors : (i + 1) * self.vectors]}, embedding_file(Path(folder), token))
                for i, token in enumerate(self.tokens)]

    @torch.no_grad()
    def load(self, folder: Path) -> None:
        """Set the learned rows from files written by :meth:`save`."""
        for i, token in enumerate(self.tokens):
            file = embedding_file(folder, token)
            if not file.is_file():
                raise CDMCheckpointError(f"embedding file {file} of token {token!r} does not exist")
            saved = load_file(str(file))[token]
            if saved.shape != (self.vectors, self.rows.shape[1]):
                raise CDMCheckpointError(f"{file} holds {tuple(saved.shape)} vectors, expected {(self.vectors, self.rows.shape[1])}")
            self.rows[i * self.vectors : (i + 1) * self.vectors] = saved.to(self.rows.device)


def add_tokens(
    tokenizer, text_encoder: nn.Module, tokens: dict[str, str], vectors: int = VECTORS_PER_TOKEN
) -> ClassTokenEmbedding:
    """Add ``tokens`` (token -> initialising words), then the :data:`SPATIAL_TOKEN` slots, to
    ``tokenizer`` and a :class:`ClassTokenEmbedding` to ``text_encoder``."""
    vocabulary = text_encoder.get_input_embeddings()
    size = vocabulary.num_embeddings
    if len(tokenizer) != size:
        raise CDMCheckpointError(f"tokenizer has {len(tokenizer)} tokens but the text encoder {size} embeddings")
    names = [n for token in (*tokens, SPATIAL_TOKEN) for n in token_names(token, vectors)]
    if tokenizer.add_tokens(names) != len(names):
        raise CDMCheckpointError(f"the tokenizer already holds one of {names}")
    if tokenizer.convert_tokens_to_ids(names) != list(range(size, size + len(names))):
        raise CDMCheckpointError(f"new tokens got ids outside {size}..{size + len(names) - 1}")
    with torch.no_grad():
        rows = torch.cat([
            vocabulary.weight[tokenizer.encode(words, add_special_tokens=False)].float().mean(0).expand(vectors, -1)
            for words in tokens.values()
        ])
    embedding = ClassTokenEmbedding(vocabulary, rows, tuple(tokens), vectors)
    text_encoder.set_input_embeddings(embedding)
    return embedding


def resize_masks(masks: torch.Tensor, size: int = 64) -> torch.Tensor:
    """``B x 1 x H x W`` masks at the spatial encoder's input size (any covered pixel counts)."""
    return F.adaptive_max_pool2d(masks.float(), size)
