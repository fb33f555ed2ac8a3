"""Benchmarks for the EfficientNet service: the limit, the service over HTTP, the obvious
alternative (FastAPI + PyTorch eager), side by side in one run. See BENCHMARKS.md."""
