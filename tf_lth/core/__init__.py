"""Core layer: masked layers, mask and action math, the round engine, networks, data,
configuration, run files; imports nothing above it (docs/architecture.md)."""
