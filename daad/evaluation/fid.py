"""Authenticity: FID and KID between pseudo-anomalies and the real test anomalies.

Both compare feature distributions of an image feature extractor; the standard choice
is Inception-v3's 2048-d pool features. daad ships no weights and downloads none:
:func:`load_inception` reads a local TorchScript file (the FID Inception published
with StyleGAN2-ADA / clean-fid, ``inception-2015-12-05.pt``, which takes images in
[0, 255] and returns features with ``return_features=True``). Without one, reports say
"not computed". Any ``nn.Module`` mapping ``B x 3 x H x W`` images in [0, 1] to
``B x D`` features can stand in (the tests use a tiny random one to check the maths).

FID: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al., 2017).
KID: the unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged over random
subsets (Binkowski et al., 2018), as torch-fidelity and clean-fid compute it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import linalg
from torch import nn

from daad.errors import DaadError

NOT_COMPUTED = "not computed"
INCEPTION_SIZE = 299


class FeatureExtractorError(DaadError):
    """The feature extractor file cannot be loaded or used; names the file."""


class TorchScriptInception(nn.Module):
    """The FID Inception (TorchScript): images in [0, 1] -> 2048-d pool features."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images * 255, return_features=True)


def load_inception(path: Path) -> TorchScriptInception:
    try:
        return TorchScriptInception(torch.jit.load(str(path), map_location="cpu").eval())
    except (RuntimeError, ValueError, OSError) as exc:
        raise FeatureExtractorError(f"{path}: not a TorchScript feature extractor ({exc})") from None


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Sequence[np.ndarray], size: int = INCEPTION_SIZE, batch_size: int = 32) -> np.ndarray:
    """``N x D`` float64 features of ``uint8`` RGB images resized to ``size x size``."""
    extractor.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        batch = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images[i : i + batch_size]])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        feats.append(extractor(x).reshape(len(batch), -1).double().numpy())
    return np.concatenate(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets ``N x D`` and ``M x D``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real))


def polynomial_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3``."""
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    m, n = len(a), len(b)
    return float(
        (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1)) + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1)) - 2 * k_ab.mean()
    )


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, subsets: int = 100, subset_size: int = 1000
) -> tuple[float, float]:
    """KID (mean, std) over ``subsets`` random subsets of ``min(subset_size, N, M)`` rows of each set."""
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least two feature rows per set")
    values = [polynomial_mmd2(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def authenticity(
    extractor: nn.Module | None, generated: Sequence[np.ndarray], real: Sequence[np.ndarray], seed: int = 0, size: int = INCEPTION_SIZE
) -> dict[str, float | str]:
    """FID and KID of ``generated`` images against ``real`` ones; "not computed" without an extractor."""
    if extractor is None:
        return {"fid": NOT_COMPUTED, "kid": NOT_COMPUTED}
    feats_g, feats_r = extract_features(extractor, generated, size), extract_features(extractor, real, size)
    kid, kid_std = kernel_inception_distance(feats_g, feats_r, np.random.default_rng(seed))
    return {"fid": frechet_distance(feats_g, feats_r), "kid": kid, "kid_std": kid_std}
