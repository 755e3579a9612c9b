"""Classic zero-shot anomaly-synthesis baselines behind the same generator interface as CAI.

- :mod:`.cutpaste`: CutPaste and CutPaste-scar (Li et al., CVPR 2021);
- :mod:`.nsa`: Natural Synthetic Anomalies, Poisson-blended patches of other normal
  images (Schlüter et al., ECCV 2022), normal and mixed mode;
- :mod:`.draem`: DRAEM-style Perlin-noise masks filled with a blended texture
  (Zavrtanik et al., ICCV 2021), noise from :mod:`.perlin`.

All yield :class:`~daad.synthesis.base.Synthesis` rows with ``anomaly_class=None``
(the pseudo-anomalies belong to no real anomaly class), so ``write_generated`` writes
them in the same schema as CAI's and the evaluation can compare them.
"""

from __future__ import annotations

from daad.errors import DaadError


class BaselineError(DaadError):
    """A baseline cannot run on the given inputs (too few targets, no textures)."""
