"""The Dockerfile builds with no container registry: no `# syntax=` directive (it
makes BuildKit pull a frontend image), no image but the PYTHON_IMAGE build argument and the
file's own stages, nothing fetched by ADD. `make image-test` builds it on an engine that has no
registry at all; this is the same promise, checked in seconds on every test run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pkg_helpers import ROOT, dockerfile_stages

DOCKERFILE = ROOT / "Dockerfile"
BASE_ARG = "${PYTHON_IMAGE}"
# Parser directives BuildKit acts on by fetching an image; also the build-arg spelling of one.
DIRECTIVE = re.compile(r"^\s*#\s*syntax\s*=", re.IGNORECASE | re.MULTILINE)
SYNTAX_ARG = re.compile(r"^\s*ARG\s+BUILDKIT_SYNTAX\b", re.IGNORECASE | re.MULTILINE)
FROM_OPTION = re.compile(r"--from=(\S+)|\bfrom=([^,\s]+)")


def registry_pulls(path: Path) -> list[str]:
    """Everything in the Dockerfile at `path` that would need a registry, one entry each."""
    text = path.read_text()
    found = [f"directive: {m.group(0).strip()}" for m in DIRECTIVE.finditer(text)]
    found += [f"build arg: {m.group(0).strip()}" for m in SYNTAX_ARG.finditer(text)]
    _, stages = dockerfile_stages(path)
    known = {BASE_ARG}
    for stage in stages:
        if stage.base not in known:
            found.append(f"FROM {stage.base}")
        for keyword, args in stage.instructions:
            for match in FROM_OPTION.finditer(args):
                source = match.group(1) or match.group(2)
                if keyword in {"COPY", "RUN"} and source not in known - {BASE_ARG}:
                    found.append(f"{keyword} from {source}")
            if keyword == "ADD" and re.search(r"(https?|git)[:@]", args):
                found.append(f"ADD {args}")
        known.add(stage.name)
    return found


def test_the_dockerfile_needs_no_registry() -> None:
    assert registry_pulls(DOCKERFILE) == []
    # The one image it starts from is a build argument, so a local one can stand in.
    _, stages = dockerfile_stages(DOCKERFILE)
    assert stages[0].base == BASE_ARG


@pytest.mark.parametrize(
    ("edit", "finding"),
    [
        (lambda t: "# syntax=docker/dockerfile:1\n" + t, "directive: # syntax="),
        (lambda t: "#Syntax = docker/dockerfile:1.7\n" + t, "directive: #Syntax ="),
        (
            lambda t: "ARG BUILDKIT_SYNTAX=docker/dockerfile:1\n" + t,
            "build arg: ARG BUILDKIT_SYNTAX",
        ),
        (lambda t: t.replace("FROM base AS export", "FROM python:3.12 AS export"), "FROM python"),
        (lambda t: t + "COPY --from=busybox:1 /bin/sh /sh\n", "COPY from busybox:1"),
        (
            lambda t: t + "RUN --mount=type=bind,from=alpine,target=/a true\n",
            "RUN from alpine",
        ),
        (lambda t: t + "ADD https://example.org/x.tar.gz /x\n", "ADD https://"),
    ],
    ids=["syntax", "syntax-spelling", "syntax-arg", "from", "copy-from", "mount-from", "add-url"],
)
def test_each_kind_of_registry_pull_is_caught(edit, finding: str, tmp_path: Path) -> None:
    """The check above can fail: each way of bringing a pull back is found."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(edit(DOCKERFILE.read_text()))
    found = registry_pulls(broken)
    assert any(item.startswith(finding) for item in found), found
