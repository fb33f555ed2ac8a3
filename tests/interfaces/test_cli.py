"""``efficientnet-classify`` as a subprocess against the running service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from photos import Photo
from server_process import ROOT, LiveServer

from efficientnet_client.outcome import ExitCode


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    return subprocess.run(
        [sys.executable, "-m", "efficientnet_client", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_output_for_several_files_in_input_order(
    live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    names = ["chelsea", "coffee", "rocket", "motorcycle"]
    files = [str(photos[n].path) for n in names]
    done = run_cli(*files, "--json", "--top-k", "3", "--url", live_server.url,
                   env={"EFFICIENTNET_API_KEY": live_server.api_key})  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    report = json.loads(done.stdout)
    assert [r["file"] for r in report["results"]] == files
    for name, result in zip(names, report["results"], strict=True):
        assert result["ok"] and result["variant"] == "lite0"
        assert len(result["predictions"]) == 3
        assert result["predictions"][0]["index"] in photos[name].expected
    assert "4/4" in done.stderr  # the progress bar, on stderr only


def test_table_shows_each_images_labels_and_scores(
    live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    path = str(photos["chelsea"].path)
    common = ["--url", live_server.url, "--api-key", live_server.api_key, "--no-progress"]
    machine = json.loads(run_cli(path, "--json", *common).stdout)["results"][0]["predictions"]
    done = run_cli(path, *common)
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{path}  (lite0, ")
    assert lines[1].split() == ["#", "label", "score"]
    for rank, (line, p) in enumerate(zip(lines[2:], machine, strict=True), 1):
        assert line.split()[0] == str(rank)
        assert p["label"] in line
        assert line.endswith(f"{100 * p['score']:.2f}%")
    assert done.stderr == ""


def test_a_rejected_image_gives_its_own_exit_code(
    live_server: LiveServer, photos: dict[str, Photo], tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a picture")
    done = run_cli(str(photos["coffee"].path), str(bogus), "--json", "--no-progress",
                   "--url", live_server.url, "--api-key", live_server.api_key)  # fmt: skip
    assert done.returncode == ExitCode.REJECTED
    good, bad = json.loads(done.stdout)["results"]
    assert good["ok"] and not bad["ok"]
    assert bad["status"] == "rejected" and bad["http_status"] in (400, 415)
    assert f"{bogus}: rejected" in done.stderr


def test_a_wrong_api_key_gives_its_own_exit_code(
    live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    done = run_cli(str(photos["coffee"].path), "--url", live_server.url, "--no-progress",
                   env={"EFFICIENTNET_API_KEY": "wrong"})  # fmt: skip
    assert done.returncode == ExitCode.UNAUTHORIZED
    assert "unauthorized (401" in done.stderr


def test_an_unreachable_server_gives_its_own_exit_code(photos: dict[str, Photo]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_cli(str(photos["coffee"].path), "--url", f"http://127.0.0.1:{port}")
    assert done.returncode == ExitCode.UNREACHABLE
    assert "unreachable" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jpg"], "missing.jpg: no such file"),
        (["{photo}", "--top-k", "0"], "must be from 1 to 1000"),
        (["{photo}", "--url", "localhost:8000"], "--url must start with http://"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_arguments_exit_before_any_request(
    photos: dict[str, Photo], args: list[str], message: str
) -> None:
    done = run_cli(*(a.format(photo=photos["coffee"].path) for a in args))
    assert done.returncode == ExitCode.USAGE
    assert message in done.stderr
