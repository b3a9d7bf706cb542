"""Daemon tests build their settings explicitly: the run's TRADER_* variables must not leak."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_trader_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)
