"""The README a newcomer reads first: the two commands lead, with what they download and where
`make serve` listens; every setting the service and the exporter read is documented with its
real default batching; the client, both error shapes and the OIP model name are where a first
try needs them; and every local link resolves."""

from __future__ import annotations

import re

from pkg_helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_the_two_commands_come_first() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block, "no command block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make serve", "make test"]


def test_every_setting_is_documented() -> None:
    from service.config import ENV_PREFIX, Settings

    missing = [f for f in Settings.model_fields if f"`{ENV_PREFIX}{f.upper()}`" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_documented_batching_defaults_are_the_services() -> None:
    from service.config import CPU_BATCHING, GPU_BATCHING

    size = re.search(r"\| `EFFICIENTNET_MAX_BATCH_SIZE` \| GPU (\d+), CPU (\d+) \|", README)
    delay = re.search(r"\| `EFFICIENTNET_MAX_BATCH_DELAY_MS` \| GPU (\S+), CPU (\S+) \|", README)
    assert size and delay
    assert (int(size[1]), int(size[2])) == (GPU_BATCHING[0], CPU_BATCHING[0])
    assert (float(delay[1]), float(delay[2])) == (GPU_BATCHING[1], CPU_BATCHING[1])


def test_local_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert local, "expected links to the Dockerfile, compose file and manifests"
    for link in local:
        assert (ROOT / link).exists(), f"README links to missing {link}"


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_exporters_settings_are_in_the_table_too() -> None:
    from model_export.weights import BASE_URL_ENV, CACHE_ENV

    table = _section("Configuration")
    for name in (BASE_URL_ENV, CACHE_ENV):
        assert f"| `{name}` |" in table, f"README's configuration table lacks {name}"


def test_two_commands_say_where_it_listens_and_what_it_downloads() -> None:
    section = _section("Two commands")
    assert "127.0.0.1" in section and "`make serve HOST=0.0.0.0`" in section
    # The measured sizes, for both PyTorch builds the install can end up with.
    for row in ("its CPU index", "the CUDA build"):
        assert re.search(rf"\| [^|]*{row}[^|]*\| ~?[\d.]+ GB[^|]*\| ~?[\d.]+ GB \|", section), row
    assert "download.pytorch.org/whl/cpu" in section and "TORCH_INDEX=" in section


def test_try_it_shows_the_cli_both_error_shapes_and_the_oip_model_name() -> None:
    from efficientnet_client.__main__ import PROG

    section = _section("Try it")
    assert f".venv/bin/{PROG} photo.jpg" in section
    assert '`{"error": {"code": "...", "message": "...", "request_id": "..."}}`' in section
    assert '`{"error": "..."}`' in section and "`/v2/`" in section
    assert "`efficientnet_<variant>`" in section
