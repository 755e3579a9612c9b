"""CAI, Cross-domain Anomaly Injection (paper section 3.1), training-free.

Real anomalies of other domains (a leak-free :class:`~daad.registry.RegistryView`) are
injected into a target domain's normal images, stage by stage:

1. **Foreground** ``M_f`` of the target (:mod:`daad.synthesis.foreground`), cached per target.
2. **Source-target matching (STM).** A source anomaly is cropped to its mask's box
   (:class:`Pattern`, once per source). ``STR = longest side of the pattern box /
   longest side of the foreground box``; trivial patterns (``STR < 0.1``) are never
   used; small ``[0.1, 0.3)``, medium ``[0.3, 0.7)``, large ``>= 0.7``. A pattern
   yields pseudo-anomalies of its own scale type or smaller; the synthesis STR is
   drawn uniformly in the chosen type's range and the pattern resized to it (aspect
   kept, at least ``min_pattern_px`` a side).
3. **Multi-scale anomaly synthesis (MAS).** Per target, large : medium : small =
   ``ratios`` (4 : 3 : 3) of ``per_target`` outputs; each drawn pattern fills the
   largest scale it may still fill (the paper's priority for larger scales).
4. **Injection location selection (ILS).** Candidates are the foreground pixels whose
   pattern box (and the Poisson clone margin around it) lies inside the image: one
   array slice of ``M_f``; one is drawn uniformly.
5. **Poisson editing**, normal (CAI-N) or mixed (CAI-M) mode, with OpenCV's
   ``seamlessClone`` discretisation (solved by DST, :mod:`daad.synthesis.poisson`, or by
   ``cv2.seamlessClone`` itself with ``solver="opencv"``), the source mask closed (5 px)
   and dilated (11 px, as OpenCV erodes it by 3 px inside, which would erase thin
   cracks); only foreground pixels keep the result.
6. **Mask** = grey difference > ``threshold`` on the placed pattern (``mask_rule="pattern"``,
   the default), or over the clone box, median-filtered (Eq. 4, ``mask_rule="paper"``);
   see :mod:`daad.synthesis.injection`. An empty or tiny
   mask (< ``min_mask_px``), or no legal location, is retried with a fresh draw, at most
   ``max_tries`` times; give-ups are counted in :class:`~daad.synthesis.base.GenerationReport`.

Every random choice comes from ``numpy.random.default_rng([seed, target_index])``, so
the same seed and inputs give the same bytes, however targets are split across workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from daad.errors import DaadError
from daad.registry.registry import require_view
from daad.synthesis.base import GenerationReport, Synthesis, Target, per_target_rows
from daad.synthesis.foreground import ForegroundExtractor
from daad.synthesis.injection import (
    CLOSE_KERNEL,
    DILATE_KERNEL,
    check_blend,
    clone_margin,
    MASK_RULES,
    inject_patch,
    select_location,
)

if TYPE_CHECKING:
    from daad.registry import RegistryView

SCALE_TYPES = ("small", "medium", "large")
"""Scale types in rank order (index = rank)."""
SCALE_BOUNDS = ((0.1, 0.3), (0.3, 0.7), (0.7, 1.0))
"""Synthesis STR range of each scale type, by rank."""
TRIVIAL_STR = 0.1


class CAIError(DaadError):
    """CAI cannot run on the given inputs (e.g. no usable source pattern for a target)."""


def scale_rank(str_values: np.ndarray | float) -> np.ndarray:
    """Scale rank of STR values: -1 trivial, 0 small, 1 medium, 2 large."""
    return np.searchsorted([0.1, 0.3, 0.7], np.asarray(str_values, dtype=np.float64), side="right") - 1


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the non-zero pixels of ``mask``, ``None`` when empty."""
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    return (x, y, w, h) if w and h else None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A source anomaly cropped to its mask's box (the mask touches every edge)."""

    id: str
    image: np.ndarray
    """``h x w x 3`` ``uint8`` RGB crop."""
    mask: np.ndarray
    """``h x w`` ``uint8`` 0/1."""
    anomaly_class: str | None = None
    licence: str = "unknown"

    @property
    def longest(self) -> int:
        return max(self.mask.shape)


def crop_pattern(
    id: str, image: np.ndarray, mask: np.ndarray, anomaly_class: str | None = None, licence: str = "unknown"
) -> Pattern | None:
    """The :class:`Pattern` of ``image`` under ``mask``; ``None`` for an empty mask."""
    box = box_of(mask)
    if box is None:
        return None
    x, y, w, h = box
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return Pattern(
        id,
        np.ascontiguousarray(rgb[y : y + h, x : x + w]),
        np.ascontiguousarray((mask[y : y + h, x : x + w] > 0).astype(np.uint8)),
        anomaly_class,
        licence,
    )


class PatternBank:
    """The source patterns, cropped once, with their longest sides as an array."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        if not patterns:
            raise CAIError("no source anomalies: the registry view selected no record")
        self.patterns = list(patterns)
        self.longest = np.array([p.longest for p in self.patterns], dtype=np.float64)

    @classmethod
    def from_view(cls, view: RegistryView) -> PatternBank:
        patterns = []
        for record in view:
            pattern = crop_pattern(
                record.id, view.read_image(record), view.read_mask(record), record.anomaly_class, record.licence
            )
            if pattern is not None:
                patterns.append(pattern)
        return cls(patterns)

    def __len__(self) -> int:
        return len(self.patterns)


@dataclass(frozen=True)
class CAIConfig:
    mode: str = "normal"
    """``normal`` (CAI-N) or ``mixed`` (CAI-M) Poisson editing."""
    per_target: int = 10
    ratios: tuple[int, int, int] = (4, 3, 3)
    """large : medium : small."""
    threshold: int = 7
    median: int = 7
    close_kernel: int = CLOSE_KERNEL
    dilate_kernel: int = DILATE_KERNEL
    min_pattern_px: int = 3
    min_mask_px: int = 10
    max_tries: int = 20
    solver: str = "dst"
    """Poisson solver: ``dst`` (fast) or ``opencv`` (``cv2.seamlessClone``); within one grey level."""
    mask_rule: str = "pattern"
    """``pattern`` (the difference on the placed pattern) or ``paper`` (Eq. 4 over the clone box)."""

    def __post_init__(self) -> None:
        check_blend(self.mode, self.solver)
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"mask rule must be one of {', '.join(MASK_RULES)}, got {self.mask_rule!r}")
        if len(self.ratios) != 3 or min(self.ratios) < 0 or sum(self.ratios) <= 0:
            raise ValueError(f"ratios must be three non-negative numbers (large, medium, small), got {self.ratios}")
        if self.median % 2 == 0:
            raise ValueError(f"median filter size must be odd, got {self.median}")


def scale_quota(ratios: tuple[int, int, int], n: int) -> np.ndarray:
    """Outputs per scale rank (small, medium, large) for ``n`` outputs split by ``ratios`` (large first).

    Largest-remainder rounding, ties to the larger scale: 10 outputs at 4:3:3 give 4/3/3.
    """
    weights = np.array(ratios[::-1], dtype=np.float64)
    exact = n * weights / weights.sum()
    quota = np.floor(exact).astype(int)
    order = sorted(range(3), key=lambda r: (-(exact[r] - quota[r]), -r))
    for r in order[: n - int(quota.sum())]:
        quota[r] += 1
    return quota


@dataclass(frozen=True, slots=True)
class Injection:
    """One successful injection into one target (before provenance is attached)."""

    image: np.ndarray
    mask: np.ndarray
    pattern: Pattern
    scale_type: str
    str_original: float
    str_synthesis: float
    centre: tuple[int, int]
    size: tuple[int, int]
    """Resized pattern ``(w, h)``."""
    retries: int


def resize_pattern(pattern: Pattern, longest: float, min_px: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The pattern resized so its longest side is ``longest`` px, re-cropped to its mask."""
    h, w = pattern.mask.shape
    ratio = longest / max(h, w)
    size = (max(min_px, round(w * ratio)), max(min_px, round(h * ratio)))
    interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    image = cv2.resize(pattern.image, size, interpolation=interp)
    mask = cv2.resize(pattern.mask * 255, size, interpolation=cv2.INTER_LINEAR) >= 128
    box = box_of(mask)
    if box is None:
        return None
    x, y, bw, bh = box
    return image[y : y + bh, x : x + bw], mask[y : y + bh, x : x + bw].astype(np.uint8)


def foreground_longest(foreground: np.ndarray, target_id: str) -> int:
    box = box_of(foreground)
    if box is None:
        raise CAIError(f"target {target_id}: empty foreground mask")
    return max(box[2], box[3])


def inject(
    target: np.ndarray,
    foreground: np.ndarray,
    pattern: Pattern,
    longest: float,
    config: CAIConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]] | str:
    """One injection attempt: ``(image, mask, centre, size)``, or the reason it failed."""
    resized = resize_pattern(pattern, longest, config.min_pattern_px)
    if resized is None:
        return "empty_resized_pattern"
    patch, patch_mask = resized
    size = (patch.shape[1], patch.shape[0])
    centre = select_location(foreground, size, clone_margin(config.dilate_kernel), rng)
    if centre is None:
        return "no_location"
    result, mask = inject_patch(
        target, foreground, patch, patch_mask, centre, config.mode,
        threshold=config.threshold, median=config.median,
        close_kernel=config.close_kernel, dilate_kernel=config.dilate_kernel, solver=config.solver,
        mask_rule=config.mask_rule,
    )
    if int(np.count_nonzero(mask)) < config.min_mask_px:
        return "tiny_mask"
    return result, mask, centre, size


def synthesise(
    target: np.ndarray,
    foreground: np.ndarray,
    bank: PatternBank,
    config: CAIConfig,
    rng: np.random.Generator,
    report: GenerationReport,
    target_id: str = "<target>",
) -> Iterator[Injection]:
    """STM + MAS + ILS + PE + mask for one target: up to ``config.per_target`` injections."""
    fg_longest = foreground_longest(foreground, target_id)
    str_original = bank.longest / fg_longest
    ranks = scale_rank(str_original)
    top = int(ranks.max())
    if top < 0:
        raise CAIError(f"target {target_id}: every source pattern is trivial (STR < {TRIVIAL_STR})")
    quota = scale_quota(config.ratios, config.per_target)
    if quota[top + 1 :].any():  # no pattern can reach these scales: fill them one scale lower
        report.quota_shifted += int(quota[top + 1 :].sum())
        quota[top] += quota[top + 1 :].sum()
        quota[top + 1 :] = 0
    while quota.any():
        lowest = int(np.flatnonzero(quota)[0])
        useful = np.flatnonzero(ranks >= lowest)
        for attempt in range(config.max_tries):
            index = int(useful[rng.integers(useful.size)])
            rank = max(r for r in range(int(ranks[index]) + 1) if quota[r])
            low, high = SCALE_BOUNDS[rank]
            s_syn = float(rng.uniform(low, high))
            outcome = inject(target, foreground, bank.patterns[index], s_syn * fg_longest, config, rng)
            if isinstance(outcome, str):
                report.failures[outcome] += 1
                continue
            image, mask, centre, size = outcome
            quota[rank] -= 1
            report.rows += 1
            report.retries += attempt
            yield Injection(
                image, mask, bank.patterns[index], SCALE_TYPES[rank], float(str_original[index]),
                s_syn, centre, size, attempt,
            )
            break
        else:
            quota[lowest] -= 1
            report.gave_up += 1


class CAI:
    """The CAI generator (``cai-normal`` or ``cai-mixed``), see the module docstring."""

    def __init__(
        self,
        config: CAIConfig | None = None,
        foreground: ForegroundExtractor | None = None,
        bank: PatternBank | None = None,
    ) -> None:
        self.config = config or CAIConfig()
        self.foreground = foreground or ForegroundExtractor()
        self.bank = bank
        self.report = GenerationReport()

    @property
    def name(self) -> str:
        return f"cai-{self.config.mode}"

    def params(self) -> dict[str, Any]:
        return asdict(self.config) | {"foreground": self.foreground.method}

    @property
    def failures(self) -> list[str]:
        """Human-readable lines for what did not go to plan (retries, give-ups, shifted quota)."""
        return self.report.lines(self.config.max_tries)

    def load_patterns(self, view: RegistryView | None) -> PatternBank:
        """The cropped patterns of ``view`` (a RegistryView, else LeakageError)."""
        return PatternBank.from_view(require_view(view, self.name))

    def prepare(self, view: RegistryView | None) -> None:
        """Crop the patterns of ``view`` (a RegistryView, else LeakageError) into ``self.bank``."""
        self.bank = self.load_patterns(view)

    def generate(self, targets: Iterable[Target], view: RegistryView | None, seed: int) -> Iterator[Synthesis]:
        """Rows for ``targets`` from the patterns of ``view`` (a RegistryView, else LeakageError)."""
        self.prepare(view)
        return per_target_rows(self, list(targets), seed)

    def generate_from_bank(self, targets: Iterable[Target], bank: PatternBank, seed: int) -> Iterator[Synthesis]:
        """Rows for ``targets`` from already-cropped patterns (kept as ``self.bank``)."""
        self.bank = bank
        return per_target_rows(self, list(targets), seed)

    def rows_for(self, targets: Sequence[Target], index: int, seed: int) -> Iterator[Synthesis]:
        """The rows of ``targets[index]``, drawn from ``default_rng([seed, index])``."""
        if self.bank is None:
            raise CAIError("no source patterns: give CAI a PatternBank, or call generate() with a registry view")
        return self.synthesise(targets[index], self.bank, np.random.default_rng([seed, index]))

    def synthesise(self, target: Target, bank: PatternBank, rng: np.random.Generator) -> Iterator[Synthesis]:
        """Up to ``per_target`` rows for one target."""
        foreground = self.foreground(target.id, target.image)
        for inj in synthesise(target.image, foreground, bank, self.config, rng, self.report, target.id):
            yield Synthesis(
                image=inj.image,
                mask=inj.mask,
                anomaly_class=inj.pattern.anomaly_class,
                target_id=target.id,
                source_ids=(inj.pattern.id,),
                details={
                    "mode": self.config.mode,
                    "scale_type": inj.scale_type,
                    "str": round(inj.str_original, 6),
                    "synthesis_str": round(inj.str_synthesis, 6),
                    "location": list(inj.centre),
                    "size": list(inj.size),
                    "retries": inj.retries,
                    "foreground": self.foreground.method,
                },
            )
