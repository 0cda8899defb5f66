"""Model card (Hub README.md) generation for UltraFastBERT checkpoints."""
