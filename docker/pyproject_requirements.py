#!/usr/bin/env python3
"""Print the third-party requirements of pyproject.toml (its dependencies, plus the extras
named on the command line), one per line, for `pip install -r`.

The Dockerfile installs these from pyproject.toml alone, before it copies the sources, so the
slow, multi-GB layer of wheels is rebuilt only when the dependencies change, not on every edit
of the code. The project's own `pip install` follows and resolves the same list again.
"""

import sys

import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"{pyproject} has no extra {unknown}; it has {sorted(optional)}")
    return [*project["dependencies"], *(dep for extra in extras for dep in optional[extra])]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: pyproject_requirements.py PYPROJECT [EXTRA...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
