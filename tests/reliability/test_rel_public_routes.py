"""What answers without the API key is exactly what docs/api.md's route table marks public
, on the real server process, and no answer shows a path on the server."""

from __future__ import annotations

import re

import httpx
from live_server import ROOT, Server
from reliability_helpers import API_KEY

MODEL = "efficientnet_lite0"


# A row of the table under docs/api.md's "## Routes": `METHOD /path` | key or – | ...
ROW = re.compile(r"^\| `GET (/[^`]*)` \| (key|–) \|", re.M)


def documented_public_routes() -> set[str]:
    """The GET routes docs/api.md's route table marks as answering without the key."""
    rows = ROW.findall((ROOT / "docs/api.md").read_text())
    assert rows, "docs/api.md has no route table with a key column"
    return {path for path, key in rows if key == "–"}


def _concrete(path: str) -> str:
    return (
        path.replace("{model_name}", MODEL)
        .replace("{name}", "app.js")
        .replace("{model_version}", "1")
    )


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
