"""Conversion of original UltraFastBERT checkpoints and Hub upload helpers."""
