"""CDM, the CAI-guided diffusion mechanism (paper Sec. 3.3), on diffusers + peft + transformers.

Following AnomalyDiffusion, CDM learns from a CAI output dataset of one target domain:

- :mod:`~daad.synthesis.cdm.embeddings`: anomaly, mask and spatial-aware embeddings (4 vectors each);
- :mod:`~daad.synthesis.cdm.maskgen`: the learnt mask generator's thresholding, and the fallback mask bank;
- :mod:`~daad.synthesis.cdm.train`: masked textual inversion of anomalies and of masks, resumable;
- :mod:`~daad.synthesis.cdm.sample`: a new mask inside each target's foreground, then the
  class's anomaly generated inside it with the target kept outside (``generator`` ``cdm``).

Needs the ``diffusion`` extra.
"""
