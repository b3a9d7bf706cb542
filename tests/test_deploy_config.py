"""The shipped example configuration stays loadable and equal to the built-in defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trader.config import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "trader.toml"


def test_example_config_matches_defaults_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/trader.toml documents the defaults: loading it changes nothing."""
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)
    assert load_settings(EXAMPLE) == Settings()
