"""Evaluation harness: train a detector on synthetic anomalies, score it on real ones.

The protocol of the CAI paper (§4.1, "Utility in IAD") and DualAnoDiff (Table 2): a
plain discriminative UNet (:mod:`daad.evaluation.detector`) is trained with focal loss
on normal images plus a generator's pseudo-anomalies (:mod:`daad.evaluation.train`),
then its anomaly maps on the evaluation dataset's real test images are scored
(:mod:`daad.evaluation.metrics`) and reported (:mod:`daad.evaluation.report`).
"""
