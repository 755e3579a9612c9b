"""DualAnoDiff (Jin et al.): one frozen SD UNet, two LoRA branches (whole image, anomaly part),
SAIM between them and BCM from the background; masks segmented from the part image.

Modules, in the order a reader meets them: ``attention`` (the processor), ``data``,
``train``, ``checkpoint``, ``pipeline``, ``masks``, ``sample``. Needs the ``diffusion`` extra.
"""
