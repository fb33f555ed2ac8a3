"""What answers without the API key is exactly what docs/api.md lists as public (issue 12), and
no answer shows a path on the server."""

from __future__ import annotations

import re

import httpx
from live_server import ROOT, Server
from reliability_helpers import API_KEY

MODEL = "efficientnet_lite0"


def documented_public_routes() -> set[str]:
    """The routes docs/api.md's ``API_KEY`` row names as public."""
    row = next(
        line
        for line in (ROOT / "docs/api.md").read_text().splitlines()
        if line.startswith("| `API_KEY`")
    )
    _, _, public = row.partition("except these public ones:")
    assert public, f"docs/api.md's API_KEY row does not list the public routes: {row}"
    return set(re.findall(r"`(/[^`]*)`", public))


def _concrete(path: str) -> str:
    return path.replace("{model_name}", MODEL).replace("{name}", "app.js")


def test_only_the_documented_routes_answer_without_the_key(keyed: Server) -> None:
    public = documented_public_routes()
    schema = httpx.get(f"{keyed.url}/openapi.json", timeout=10).json()
    routes = {p for p, ops in schema["paths"].items() if "get" in ops} | public
    assert {"/healthz", "/v2/health/ready", "/metadata", "/v2/models/{model_name}"} <= routes
    with httpx.Client(base_url=keyed.url, timeout=10) as client:
        for route in sorted(routes):
            response = client.get(_concrete(route))
            if route in public:
                assert response.status_code == 200, (route, response.status_code)
            else:
                assert response.status_code == 401, (route, response.status_code)
                assert MODEL not in response.text and "lite0" not in response.text, route


def test_no_answer_shows_a_server_path(keyed: Server) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=keyed.url, headers=auth, timeout=10) as client:
        metadata = client.get("/metadata")
        v2 = client.get(f"/v2/models/{MODEL}")
    assert metadata.status_code == 200 and v2.status_code == 200
    for response in (metadata, v2):
        assert ".onnx" not in response.text and str(ROOT) not in response.text, response.text
        assert "model_path" not in response.json()
