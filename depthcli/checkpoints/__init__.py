"""Checkpoints: finding and trust-checking them, their layouts, and the synthetic-weight recipe."""
