"""Pictures of the registry for people: records per class, split by origin and by licence."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from daad.atomic import write_atomically
from daad.taxonomy import ANOMALY_CLASSES


def plot_counts(counts: Counter, path: Path, title: str) -> Path:
    """A PNG of two stacked bar charts of ``counts`` (``(class, origin, licence) -> records``):
    records per class split by origin, and per class split by licence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in ANOMALY_CLASSES if any(k[0] == c for k in counts)]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.5 * len(classes) + 2.5), sharey=True)
    for ax, part, name in ((axes[0], 1, "origin"), (axes[1], 2, "licence")):
        groups = sorted({k[part] for k in counts})
        left = [0] * len(classes)
        for group in groups:
            widths = [sum(n for k, n in counts.items() if k[0] == c and k[part] == group) for c in classes]
            ax.barh(classes, widths, left=left, label=group)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_title(f"records per class, by {name}")
        ax.set_xlabel("records")
        ax.legend(fontsize=7, loc="lower right")
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    write_atomically(path, [figure_png(fig)])
    return path


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi), the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
