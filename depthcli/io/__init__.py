"""File-facing code: discovery, decoding, output paths, atomic writes (no torch here)."""
