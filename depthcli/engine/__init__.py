"""The engine: device and precision policy, preprocessing, batching, threads (host arrays out)."""
