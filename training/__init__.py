"""blockspec DFlash drafter training pipeline (see training/README.md)."""
