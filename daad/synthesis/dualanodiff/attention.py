"""The dual-branch attention processor: two LoRA sets, SAIM and BCM in one diffusers processor.

A batch through the UNet holds pairs as adjacent rows, ``[whole₀, part₀, whole₁, part₁, …]``
(under classifier-free guidance: ``[uncond pairs…, cond pairs…]``, each half still paired).
Every attention layer of the frozen UNet gets a :class:`DualAttnProcessor` that

- adds **branch LoRA** deltas to ``to_q/to_k/to_v/to_out``: row ``2i`` (whole) uses set 0,
  row ``2i + 1`` (part) uses set 1 (paper §Dual-Interrelated Diffusion);
- applies **SAIM** to the attention output: the two branch tokens of each spatial position
  attend to each other with their own projections, added back residually (Eq. 3);
- in self-attention of the whole branch, applies **BCM**: keys and values come from
  ``h + γ·MLP(h_b)`` where ``h_b`` is this layer's input in a background pass run just
  before (Eq. 5, the paper's additive form; γ learnable, 0.1 by default, 0 = no-op start).

The background pass hands its inputs to the dual pass through a :class:`BackgroundPass`
given to both UNet calls as ``cross_attention_kwargs`` (:meth:`BackgroundPass.capture`,
:meth:`BackgroundPass.fuse`), never through state held by the processors, so a
gradient-checkpointed UNet recomputes either pass exactly as it first ran.

Set the processors with :func:`install` (``unet.set_attn_processor``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

WHOLE, PART = 0, 1


@dataclass(frozen=True)
class DualConfig:
    """The trainable structure added to the frozen UNet (saved with every checkpoint)."""

    rank: int = 32
    saim: bool = True
    bcm: bool = True
    gamma_init: float = 0.1

    def to_json(self) -> dict:
        return asdict(self)


class LoRA(nn.Module):
    """A low-rank update ``up(down(x))``; ``up`` starts at zero so the base model is unchanged."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class BranchLoRA(nn.Module):
    """One branch's LoRA on the query, key, value and output projections of one attention layer."""

    def __init__(self, hidden_size: int, context_size: int, rank: int) -> None:
        super().__init__()
        self.to_q = LoRA(hidden_size, hidden_size, rank)
        self.to_k = LoRA(context_size, hidden_size, rank)
        self.to_v = LoRA(context_size, hidden_size, rank)
        self.to_out = LoRA(hidden_size, hidden_size, rank)


class PairInteraction(nn.Module):
    """SAIM: at every position, the whole- and part-branch tokens attend to each other.

    Where it differs from the authors' processor (``dual-interrelated_diff``, their
    ``temporal_*`` layers): they normalise the two tokens with a LayerNorm and pass them
    through an input projection before a single-head attention; here the tokens go straight
    into a multi-head attention (the layer's own head count) with q/k/v/out projections,
    which is the paper's Eq. 3 as written. Both add the result back residually.
    """

    def __init__(self, hidden_size: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(hidden_size, hidden_size)
        self.to_k = nn.Linear(hidden_size, hidden_size)
        self.to_v = nn.Linear(hidden_size, hidden_size)
        self.to_out = nn.Linear(hidden_size, hidden_size)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """``pairs``: ``(positions, 2, C)``; returns ``pairs + SelfAtt(pairs)``."""
        n, two, c = pairs.shape
        split = lambda x: x.view(n, two, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        mixed = F.scaled_dot_product_attention(split(self.to_q(pairs)), split(self.to_k(pairs)), split(self.to_v(pairs)))
        return pairs + self.to_out(mixed.transpose(1, 2).reshape(n, two, c))


class BackgroundFusion(nn.Module):
    """BCM: ``h + γ·MLP(h_b)`` for the whole branch's self-attention keys and values."""

    def __init__(self, hidden_size: int, gamma_init: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    def forward(self, hidden: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        return hidden + self.gamma * self.mlp(background)


class DualAttnProcessor(nn.Module):
    """Attention with per-branch LoRA, SAIM on the output and (self-attention only) BCM."""

    def __init__(self, hidden_size: int, context_size: int | None, heads: int, config: DualConfig) -> None:
        super().__init__()
        self.is_self_attention = context_size is None
        self.branches = nn.ModuleList(
            BranchLoRA(hidden_size, context_size or hidden_size, config.rank) for _ in (WHOLE, PART)
        )
        self.saim = PairInteraction(hidden_size, heads) if config.saim else None
        self.bcm = BackgroundFusion(hidden_size, config.gamma_init) if config.bcm and self.is_self_attention else None

    def _project(self, base: nn.Module, name: str, x: torch.Tensor, branch: torch.Tensor | None) -> torch.Tensor:
        """``base(x)`` plus the LoRA of each row's branch (``branch`` None: whole branch for all rows)."""
        out = base(x)
        if branch is None:
            return out + getattr(self.branches[WHOLE], name)(x)
        pairs = x.view(-1, 2, *x.shape[1:])
        delta = torch.stack([getattr(self.branches[b], name)(pairs[:, b]) for b in (WHOLE, PART)], dim=1)
        return out + delta.view(*out.shape[:1], *delta.shape[2:])

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, background=None):
        # explicit signature: diffusers passes a processor only the cross_attention_kwargs it names
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, background)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, background=None):
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("DualAttnProcessor supports the transformer attention of SD-style UNets only")
        residual = hidden_states
        batch = hidden_states.shape[0]
        fused = None
        if background is not None and background.capturing:
            # background pass: the whole branch without SAIM (paper: "except for the SAIM")
            if self.bcm is not None:
                background.inputs[id(self)] = hidden_states
            branch = None
        else:
            if batch % 2:
                raise ValueError(f"a dual batch holds [whole, part] pairs; got {batch} rows")
            branch = torch.arange(batch, device=hidden_states.device) % 2
            if background is not None and self.bcm is not None:
                fused = background.inputs.get(id(self))

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if fused is not None:
            if fused.shape[0] * 2 != batch:
                raise ValueError(f"background pass had {fused.shape[0]} rows for {batch // 2} pairs")
            pairs = context.view(-1, 2, *context.shape[1:])
            fused_whole = self.bcm(pairs[:, WHOLE], fused.to(context.dtype))
            context = torch.stack([fused_whole, pairs[:, PART]], dim=1).view_as(context)

        query = self._project(attn.to_q, "to_q", hidden_states, branch)
        key = self._project(attn.to_k, "to_k", context, branch)
        value = self._project(attn.to_v, "to_v", context, branch)
        head_dim = key.shape[-1] // attn.heads
        split = lambda x: x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # noqa: E731
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        out = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](self._project(attn.to_out[0], "to_out", out, branch))

        if self.saim is not None and branch is not None:
            length, channels = out.shape[1:]
            pairs = out.view(batch // 2, 2, length, channels).permute(0, 2, 1, 3).reshape(-1, 2, channels)
            out = self.saim(pairs).view(batch // 2, length, 2, channels).permute(0, 2, 1, 3).reshape(batch, length, channels)

        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install(unet: nn.Module, config: DualConfig, dtype: torch.dtype | None = None) -> nn.ModuleDict:
    """Give every attention layer of ``unet`` a :class:`DualAttnProcessor`; return them (trainable).

    ``dtype``: of the new weights (default: the UNet's; training keeps them float32 under
    mixed precision while the frozen UNet is in half precision).
    """
    processors = {}
    modules = dict(unet.named_modules())
    for name in unet.attn_processors:
        attn = modules[name.removesuffix(".processor")]
        context = None if name.endswith("attn1.processor") else attn.to_k.in_features
        processors[name] = DualAttnProcessor(attn.to_q.in_features, context, attn.heads, config).to(
            unet.device, dtype or unet.dtype
        )
    unet.set_attn_processor(dict(processors))  # diffusers empties the dict it is given
    return nn.ModuleDict({name.replace(".", "__"): proc for name, proc in processors.items()})


def gammas(layers: nn.ModuleDict) -> torch.Tensor:
    """Every BCM γ, in layer order (empty when BCM is off)."""
    values = [proc.bcm.gamma for proc in layers.values() if proc.bcm is not None]
    return torch.stack(values) if values else torch.empty(0)


@dataclass
class BackgroundPass:
    """The self-attention inputs of one background pass, by processor, for the dual pass after it."""

    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    capturing: bool = False

    def capture(self) -> dict:
        """``cross_attention_kwargs`` of the background pass: each BCM layer records its input."""
        return {"background": BackgroundPass(self.inputs, capturing=True)}

    def fuse(self) -> dict:
        """``cross_attention_kwargs`` of the dual pass: the whole branch fuses the recorded inputs."""
        return {"background": BackgroundPass(self.inputs, capturing=False)}
