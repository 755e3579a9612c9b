"""The discriminative UNet of DRAEM / AnomalyDiffusion and the focal loss it is trained with.

Encoder: six blocks of (conv 3x3, BN, ReLU) x 2, widths ``w, 2w, 4w, 8w, 8w, 8w``, with
max-pooling between them; decoder: bilinear upsampling + conv, concatenation with the
encoder block of the same scale, (conv, BN, ReLU) x 2; a final 3x3 conv to two
classes (normal, anomalous). DRAEM feeds it the image and its reconstruction (6
channels); AnomalyDiffusion and the CAI paper feed the image alone (3 channels, the
default here). Width 64 is the papers'; smaller widths are for CPU budgets and tests.

Reference: Zavrtanik, Kristan, Skocaj, "DRAEM - A discriminatively trained
reconstruction embedding for surface anomaly detection", ICCV 2021; Lin, Goyal,
Girshick, He, Dollar, "Focal loss for dense object detection", ICCV 2017.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTH = 6
WIDTH_MULTIPLIERS = (1, 2, 4, 8, 8, 8)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )
        self.fuse = _double_conv(cout + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class DiscriminativeUNet(nn.Module):
    """Image ``B x C x H x W`` (H, W divisible by 32) -> logits ``B x 2 x H x W``."""

    def __init__(self, in_channels: int = 3, base_width: int = 64) -> None:
        super().__init__()
        widths = [base_width * m for m in WIDTH_MULTIPLIERS]
        self.encoder = nn.ModuleList(
            _double_conv(cin, cout) for cin, cout in zip([in_channels, *widths[:-1]], widths)
        )
        self.decoder = nn.ModuleList(
            _UpBlock(widths[i + 1], widths[i], widths[i])
            for i in reversed(range(DEPTH - 1))
        )
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)

    @torch.no_grad()
    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel probability of the anomalous class, ``B x H x W``."""
        return torch.softmax(self(x), dim=1)[:, 1]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss ``-(1 - p_t)^gamma log p_t`` of 2-class ``logits`` against a 0/1 ``target`` (``B x H x W``)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()
