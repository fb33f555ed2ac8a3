"""``efficientnet-classify``: classify image files with a running EfficientNet service.

Talks to the service over HTTP only (``POST /classify``), so it needs neither the model nor
onnxruntime. Exit codes are listed in :class:`efficientnet_client.outcome.ExitCode`.
"""

__version__ = "0.1.0"
