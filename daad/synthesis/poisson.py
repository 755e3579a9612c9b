"""Poisson image editing (Pérez et al. 2003) with OpenCV's discretisation, solved by DST.

:func:`seamless_clone` takes the arguments of ``cv2.seamlessClone`` and returns what
it returns, up to float rounding (at most one grey level, on a few pixels). It follows
OpenCV's ``photo`` module step by step: the clone region is the mask's bounding box
(the mask's outer 1-px ring cleared), the mask is eroded by a 3 x 3 kernel three times,
the guidance field is the source's forward differences inside the eroded mask and the
destination's outside (normal mode), or per channel the field whose ``|gx - gy|`` is
larger (mixed mode, OpenCV's rule), its backward-difference divergence is the right-hand
side, the box's border is the Dirichlet boundary, and the result is truncated to
``uint8``. The difference is the solver: one ``scipy.fft`` DST-I over all channels at
once in ``float32``, where OpenCV runs complex DFTs channel by channel; about 4x
faster on the box sizes CAI uses (``benchmarks/synthesis.py``).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy import fft
from threadpoolctl import ThreadpoolController

MODES = ("normal", "mixed")
_ERODE = np.ones((3, 3), np.uint8)
MATMUL_MAX = 512


def seamless_clone(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, p: tuple[int, int], mode: str) -> np.ndarray:
    """``dst`` with the ``mask`` region of ``src`` blended in, its box centred on ``p = (x, y)``.

    ``src`` and ``dst`` are ``uint8`` ``H x W x 3``; ``mask`` is ``uint8`` of ``src``'s size.
    The destination box must lie inside ``dst`` (as ``cv2.seamlessClone`` requires).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    inner = np.zeros(mask.shape, np.uint8)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] != 0
    x, y, w, h = cv2.boundingRect(inner)
    out = dst.copy()
    if w == 0 or h == 0:
        return out
    left, top = p[0] - w // 2, p[1] - h // 2
    if left < 0 or top < 0 or left + w > dst.shape[1] or top + h > dst.shape[0]:
        raise ValueError(f"clone box {w}x{h} at ({left}, {top}) does not fit in {dst.shape[1]}x{dst.shape[0]}")
    # The box keeps a zero ring around the mask (the bounding box of the cleared mask
    # sits inside it), so eroding the crop with a zero border equals OpenCV's erosion.
    region = np.pad(inner[y : y + h, x : x + w], 1)
    region = cv2.erode(region, _ERODE, iterations=3, borderType=cv2.BORDER_CONSTANT, borderValue=0)[1:-1, 1:-1]
    # Channels first: each channel's solve is then two matrix products per axis.
    dest = np.moveaxis(dst[top : top + h, left : left + w], -1, 0).astype(np.float32)
    # Eroded pixels and their forward neighbours lie inside the mask, so the source
    # need not be zeroed outside it (OpenCV's copy through the mask) to give the same field.
    sgx, sgy = _forward(np.moveaxis(src[y : y + h, x : x + w], -1, 0).astype(np.float32))
    gx, gy = _forward(dest)
    take = np.broadcast_to(region != 0, gx.shape)
    if mode == "mixed":
        take = take & (np.abs(sgx - sgy) > np.abs(gx - gy))
    np.copyto(gx, sgx, where=take)
    np.copyto(gy, sgy, where=take)
    out[top : top + h, left : left + w] = np.moveaxis(_solve(dest, gx, gy), 0, -1)
    return out


def _forward(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences ``img[i + 1] - img[i]`` along x and y of a ``C x H x W`` array
    (the last column / row is never used)."""
    gx = np.zeros_like(img)
    np.subtract(img[:, :, 1:], img[:, :, :-1], out=gx[:, :, :-1])
    gy = np.zeros_like(img)
    np.subtract(img[:, 1:], img[:, :-1], out=gy[:, :-1])
    return gx, gy


def _solve(dest: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The ``uint8`` ``C x H x W`` box whose interior solves ``laplacian(u) = div(gx, gy)``
    with ``u = dest`` on the border."""
    h, w = dest.shape[1:]
    # Backward-difference divergence on the interior, then the known border values
    # moved to the right-hand side (OpenCV's ``Laplacian`` of the border ring).
    rhs = gx[:, 1:-1, 1:-1] - gx[:, 1:-1, :-2]
    rhs += gy[:, 1:-1, 1:-1]
    rhs -= gy[:, :-2, 1:-1]
    rhs[:, 0] -= dest[:, 0, 1:-1]
    rhs[:, -1] -= dest[:, -1, 1:-1]
    rhs[:, :, 0] -= dest[:, 1:-1, 0]
    rhs[:, :, -1] -= dest[:, 1:-1, -1]
    # One BLAS thread: threaded products may round differently, and the output must not
    # depend on how many threads (or worker processes) there are.
    with _blas().limit(limits=1, user_api="blas"):
        coeffs = _dst(_dst(rhs, 1), 2)
        coeffs /= _eigenvalues(h - 2, w - 2)
        interior = _dst(_dst(coeffs, 1), 2)
    # OpenCV clamps to [0, 255] and truncates (it does not round).
    dest[:, 1:-1, 1:-1] = np.clip(interior, 0, 255, out=interior)
    return dest.astype(np.uint8)


def _dst(x: np.ndarray, axis: int) -> np.ndarray:
    """DST-I along ``axis`` (1 or 2) of a ``C x H x W`` array: ``y_k = sum_j x_j sin(pi (k+1)(j+1) / (n+1))``.

    A product with the (symmetric) sine matrix up to ``MATMUL_MAX`` points, whose cost does not
    depend on the factors of ``n + 1`` as an FFT's does; ``scipy.fft`` beyond.
    """
    n = x.shape[axis]
    if n > MATMUL_MAX:
        return fft.dst(x, type=1, axis=axis, workers=1) / 2
    return _sines(n) @ x if axis == 1 else x @ _sines(n)


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


@lru_cache(maxsize=64)
def _sines(n: int) -> np.ndarray:
    k = np.arange(1, n + 1)
    return np.sin(np.pi * np.outer(k, k) / (n + 1)).astype(np.float32)


@lru_cache(maxsize=256)
def _eigenvalues(rows: int, cols: int) -> np.ndarray:
    """Eigenvalues of the 5-point Laplacian with Dirichlet border on a ``rows x cols`` grid,
    scaled by the DST-I's inverse (``S @ S = (n + 1) / 2``)."""
    ly = 2 * np.cos(np.pi * np.arange(1, rows + 1) / (rows + 1)) - 2
    lx = 2 * np.cos(np.pi * np.arange(1, cols + 1) / (cols + 1)) - 2
    return ((ly[:, None] + lx[None, :]) * ((rows + 1) * (cols + 1) / 4)).astype(np.float32)
