"""Developer tools, run from a checkout (`python -m tools.X`); a user install does not carry them.

fuzz: the hostile-input corpus the robustness tests and the issue checks use; gpu_bench: the GPU
benchmark script; temporal_strip: the README's temporal-consistency picture.
"""
