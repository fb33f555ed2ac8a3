"""The hardened HTTP edge: the only package that touches uvicorn's internals.

``server`` runs uvicorn with a hardened protocol (header limits, lingering close, connection
and per-connection request limits); ``body_limit`` bounds request bodies in size and rate;
``request_metrics`` counts every answer; ``access_log`` ends each access log line with the
request id.
"""
