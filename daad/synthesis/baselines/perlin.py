"""2-D Perlin noise with array operations (as DRAEM uses for its anomaly masks)."""

from __future__ import annotations

import math

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``shape`` noise in about ``[-1, 1]`` with ``res`` gradient cells along (y, x)."""
    cell = (math.ceil(shape[0] / res[0]), math.ceil(shape[1] / res[1]))
    ys = np.arange(cell[0] * res[0]) / cell[0]
    xs = np.arange(cell[1] * res[1]) / cell[1]
    iy, ix = ys.astype(int), xs.astype(int)
    fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]
    angles = 2 * np.pi * rng.random((res[0] + 1, res[1] + 1))
    grad_y, grad_x = np.sin(angles), np.cos(angles)

    def corner(oy: int, ox: int) -> np.ndarray:
        gy, gx = grad_y[iy[:, None] + oy, ix[None, :] + ox], grad_x[iy[:, None] + oy, ix[None, :] + ox]
        return gy * (fy - oy) + gx * (fx - ox)

    u, v = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (math.sqrt(2) * (top * (1 - u) + bottom * u))[: shape[0], : shape[1]]
