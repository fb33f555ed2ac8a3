"""Hostile Open Inference Protocol requests, against the real ``python -m service``:
output amplification, JSON nested a thousand deep, a 12 MB body of 200,000 inputs, unrouted
/v2 paths. Each gets a prompt 400/404/405 in the protocol's ``{"error": "..."}`` shape, and
other clients keep being served meanwhile."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import orjson
from edge_helpers import assert_honest_served, small_photo
from live_server import Server
from PIL import Image

MODEL = "efficientnet_lite0"
INFER = f"/v2/models/{MODEL}/infer"
# A refusal must come at once, and nothing it makes the server do may stall other requests
# for longer than this (the 200,000-input body blocked the event loop 6.8 s before).
PROMPT_S = 3.0


def _tiny_png(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def _encoded(count: int) -> dict:
    data = [_tiny_png(i) for i in range(count)]
    return {"name": "encoded_image", "shape": [count], "datatype": "BYTES", "data": data}


def _assert_oip_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert len(body["error"]) < 500, f"{len(body['error'])}-character message"
    return body["error"]


def test_each_output_at_most_once(served: Server) -> None:
    """8 tiny images and 1,000 `labels` outputs at classification 1000 made a 61 kB request
    answer 203 MB: now 400 at once, for the count (100 here; 1,000 are refused for their JSON
    object count before parsing); a few repeats, for naming one twice."""
    labels = {"name": "labels", "parameters": {"classification": 1000}}
    for repeats, refusal in [(100, "'outputs' lists 100 tensors"), (8, "more than once")]:
        body = {"inputs": [_encoded(8)], "outputs": [labels] * repeats}
        started = time.monotonic()
        response = httpx.post(f"{served.url}{INFER}", json=body, timeout=60)
        assert time.monotonic() - started < PROMPT_S
        assert refusal in _assert_oip_error(response, 400)
    over = {"inputs": [_encoded(1)], "outputs": [{"name": "labels", "parameters": {"top_k": 1001}}]}
    message = _assert_oip_error(httpx.post(f"{served.url}{INFER}", json=over, timeout=30), 400)
    assert "from 1 to 1000" in message
    # One of each is the protocol's use, and still answered in full.
    both = [{"name": "labels", "parameters": {"classification": 1000}}, {"name": "probabilities"}]
    ok = httpx.post(f"{served.url}{INFER}", json={"inputs": [_encoded(2)], "outputs": both})
    assert ok.status_code == 200, ok.text[:300]
    assert [o["shape"] for o in ok.json()["outputs"]] == [[2, 1000], [2, 1000]]


def test_json_nested_a_thousand_deep_is_400_not_500(served: Server) -> None:
    nested = "[" * 1000 + "1" + "]" * 1000  # within orjson's own limit (1024): it parses
    header = '{"inputs": [{"name": "image", "shape": [1, 224, 224, 3], "datatype": "UINT8", '
    body = f'{header}"data": {nested}}}]}}'.encode()
    response = httpx.post(
        f"{served.url}{INFER}", content=body, headers={"content-type": "application/json"}
    )
    assert "nested deeper than its shape's 4 dimensions" in _assert_oip_error(response, 400)
    served.assert_alive()


def _probe_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            client.get(f"{url}/healthz")
            out.append(time.monotonic() - started)
            time.sleep(0.05)


def test_a_body_of_200000_inputs_neither_stalls_the_server_nor_echoes(served: Server) -> None:
    """A 12 MB body listing 200,000 inputs: a short 400 (not a message naming them all), and
    /healthz keeps answering while it is refused (it was parsed on the event loop before)."""
    tensor = {"name": "image", "shape": [1, 224, 224, 3], "datatype": "UINT8"}
    body = orjson.dumps({"inputs": [tensor] * 200_000})
    assert len(body) > 10_000_000
    stop, latencies = threading.Event(), []
    prober = threading.Thread(target=_probe_latencies, args=(served.url, stop, latencies))
    prober.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.post(
            f"{served.url}{INFER}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        took = time.monotonic() - started
        time.sleep(0.3)
    finally:
        stop.set()
        prober.join()
    print(
        f"\n200,000 inputs: {response.status_code} after {took:.2f} s, /healthz max "
        f"{max(latencies):.2f} s, message {len(response.text)} bytes"
    )
    message = _assert_oip_error(response, 400)
    assert "200001 JSON objects; at most 256" in message, message
    assert took < PROMPT_S, f"refused after {took:.1f} s"
    assert max(latencies) < PROMPT_S / 2, f"/healthz stalled {max(latencies):.1f} s"


def test_unrouted_v2_paths_answer_in_the_protocols_shape(served: Server) -> None:
    assert "Not Found" in _assert_oip_error(httpx.get(f"{served.url}/v2/nothing/here"), 404)
    wrong_method = httpx.get(f"{served.url}{INFER}")
    assert "Method Not Allowed" in _assert_oip_error(wrong_method, 405)
    # Outside /v2 the service's own shape stays.
    own = httpx.get(f"{served.url}/nothing").json()["error"]
    assert set(own) == {"code", "message", "request_id"}
    assert_honest_served(served, small_photo(), count=1)
