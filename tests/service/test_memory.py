"""glibc's arena cap: set by the service on glibc, left to an explicit MALLOC_ARENA_MAX."""

from __future__ import annotations

import platform

import pytest

from service.memory import limit_malloc_arenas


def test_cap_set_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")


def test_explicit_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
