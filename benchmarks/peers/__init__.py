"""The servers a user would pick instead of ours (NVIDIA Triton through PyTriton,
TorchServe, BentoML, LitServe), each a small setup of its own in its own virtual environment,
measured side by side with the service by `python -m benchmarks.peers` (`make bench-peers`).

Nothing here may import the harness's dependencies at package level: the peers' own processes
import `benchmarks.peers.<peer>` from their virtual environments.
"""
