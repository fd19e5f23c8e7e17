"""Developer tools (fuzzing); not part of the CLI."""
