"""Generators of pseudo-anomalies: CAI, classic baselines, CDM and DualAnoDiff."""
