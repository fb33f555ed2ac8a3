"""One router per resource: ``classify``, ``health``, ``metadata`` (with ``/metrics``), ``page``."""
