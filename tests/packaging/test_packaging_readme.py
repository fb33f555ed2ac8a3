"""The README a newcomer reads first: the two commands lead, every setting the service reads is
documented with its real default batching, and every local link resolves."""

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
