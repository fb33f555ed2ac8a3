"""The service's own REST API: routes, their dependencies and schemas, the one error renderer."""
