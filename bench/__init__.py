"""Benchmarks of the trainer against its PyTorch peers; scripts, not tests (see bench/README.md)."""
