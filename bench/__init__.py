"""Benchmarks of gpu-provisioner with real parts; ``python -m bench.provision --help``."""
