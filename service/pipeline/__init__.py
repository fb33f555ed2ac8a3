"""The data path, with no HTTP in it: admission → decode → batcher → session → ranking.

``pipeline.Pipeline`` is the one API the protocols call. This package's ``__init__`` imports
nothing: the decode workers' forkserver imports ``decode.workers`` and must not load onnxruntime.
"""
