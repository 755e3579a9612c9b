"""The DAAD taxonomy: eight anomaly classes, three sources, curation states.

The classes are the paper's (Sec. 3.2, "Anomaly Categorization"): anomalies are
grouped by what they look like, not by the domain they were found in.
"""

from __future__ import annotations

from enum import StrEnum

ANOMALY_CLASSES: tuple[str, ...] = (
    "pits",
    "crack",
    "hole",
    "stain",
    "scratch",
    "orifice",
    "impurity",
    "abrasion",
)
"""ClassLabel order of the built dataset; never reorder (ids are stored)."""

CLASS_DEFINITIONS: dict[str, str] = {
    "pits": "small shallow depressions or dents in a surface (pitting, blowholes, dimples)",
    "crack": "a thin linear fracture or split running through the material",
    "hole": "an opening that goes through or deep into the material, with missing matter",
    "stain": "a discoloured patch on the surface (dirt, oil, rust, patches of colour)",
    "scratch": "a thin linear mark scraped into the surface, without separating it",
    "orifice": "a deformed, blocked or malformed opening, port or mouth of a part",
    "impurity": "foreign matter embedded in or lying on the material (inclusions, debris)",
    "abrasion": "a worn or rubbed area where the surface texture has been scuffed away",
}

UNMAPPED = "unmapped"
"""Class value of a record whose native defect fits none of the eight classes."""


class Source(StrEnum):
    """Where a real anomaly was collected (paper Sec. 3.2, "Real Anomaly Collection")."""

    ONLINE_SEARCH = "online_search"
    REALITY_PHOTO = "reality_photo"
    EXISTING_DATASET = "existing_dataset"


class Status(StrEnum):
    """Curation state of a record. Only ``accepted`` records are built by default."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"
    NEEDS_IMAGE = "needs_image"
    """A URL record whose image has not been fetched (or could not be)."""
    NEEDS_MASK = "needs_mask"
    """An image is present but no anomaly mask has been drawn yet."""


def check_class(value: str, *, allow_unmapped: bool = True) -> str:
    """Return ``value`` if it is a DAAD class (or ``unmapped``), else raise ``ValueError``."""
    if value in ANOMALY_CLASSES or (allow_unmapped and value == UNMAPPED):
        return value
    raise ValueError(
        f"unknown anomaly class {value!r}; expected one of {', '.join(ANOMALY_CLASSES)}"
        + (f" or {UNMAPPED!r}" if allow_unmapped else "")
    )
