"""CDM, the CAI-guided diffusion mechanism (paper Sec. 3.3), on diffusers + peft + transformers.

Following AnomalyDiffusion, CDM learns from a CAI output dataset of one target domain:

- :mod:`~daad.synthesis.cdm.embeddings`: one textual-inversion token per anomaly class;
- :mod:`~daad.synthesis.cdm.maskgen`: a mask generator fitted to the CAI masks;
- :mod:`~daad.synthesis.cdm.train`: masked textual inversion + mask-generator fit, resumable;
- :mod:`~daad.synthesis.cdm.sample`: a new mask inside each target's foreground, then the
  class's anomaly generated inside it with the target kept outside (``generator`` ``cdm``).

Needs the ``diffusion`` extra.
"""
