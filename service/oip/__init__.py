"""The Open Inference Protocol v2 (KServe v2, Triton's HTTP/REST): ``codec`` (the wire format,
no HTTP framework), ``openapi`` (what the routes document), ``routes``."""
