"""Mask formats: reading the annotation files that sources publish into binary masks."""
