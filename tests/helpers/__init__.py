"""Test helpers: small real components built on the fly (no downloads)."""
