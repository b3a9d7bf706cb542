"""Configuration loading: TOML + environment, frozen, unknown keys and bad values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from trader.config import Settings, load_settings
from trader.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own TRADER_* variables out of these tests."""
    for key in list(os.environ):
        if key.startswith("TRADER_"):
            monkeypatch.delenv(key)


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "trader.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_defaults_match_contract_when_no_file_exists(tmp_path: Path) -> None:
    """With no file and no environment, the contract's defaults apply."""
    settings = Settings()
    assert settings.database.url == "sqlite+aiosqlite:///trader.db"
    assert settings.feed.ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert settings.feed.ping_interval_s == 20
    assert settings.broker.taker_fee == 0.00055
    assert settings.broker.initial_equity == 10_000
    assert settings.mqtt.url is None
    assert settings.mqtt.topic_prefix == "trader"


def test_environment_overrides_file_when_both_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRADER_<SECTION>__<KEY> beats the TOML file."""
    path = _write(tmp_path, '[risk]\nmax_drawdown = 0.3\n[feed]\nsymbols = ["ETHUSDT"]\n')
    monkeypatch.setenv("TRADER_RISK__MAX_DRAWDOWN", "0.25")
    settings = load_settings(path)
    assert settings.risk.max_drawdown == 0.25
    assert settings.feed.symbols == ("ETHUSDT",)


def test_symbols_accept_comma_list_when_given_by_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A comma-separated symbol list in the environment becomes a tuple."""
    monkeypatch.setenv("TRADER_FEED__SYMBOLS", "BTCUSDT, ETHUSDT")
    assert load_settings().feed.symbols == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[risk]\nbogus = 1\n", "risk.bogus"),
        ("[nosuchsection]\nx = 1\n", "nosuchsection"),
        ("[risk]\nmax_drawdown = 1.5\n", "risk.max_drawdown"),
        ('[feed]\ninterval = "7"\n', "feed.interval"),
        ('[feed]\nsymbols = ["btcusdt"]\n', "feed.symbols"),
        ('[strategy]\nname = "magic"\n', "strategy.name"),
        ("[model]\nstrategic_every = 5\n", "model.strategic_every"),
        ("[rewards]\nstrategic_weight = 3.0\n", "rewards.strategic_weight"),
        ("[risk]\nmax_drawdown = 0.05\nsoft_drawdown = 0.1\n", "risk"),
    ],
)
def test_bad_config_names_the_key_when_loading(tmp_path: Path, toml: str, key: str) -> None:
    """Unknown keys and out-of-range values fail at start-up with the key named."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, toml))
    assert key in str(info.value)


def test_unknown_env_key_is_rejected_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt TRADER_ variable inside a section is an error, not silently ignored."""
    monkeypatch.setenv("TRADER_RISK__MAX_DRAWDOWNN", "0.1")
    with pytest.raises(ConfigError, match=r"risk\.max_drawdownn: unknown key"):
        load_settings()


def test_malformed_toml_is_a_config_error_when_loading(tmp_path: Path) -> None:
    """A syntax error in the file is reported as a configuration error."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[risk\nmax_drawdown = "))


def test_missing_explicit_file_is_an_error_when_given(tmp_path: Path) -> None:
    """--config pointing at nothing fails instead of silently using defaults."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_secret_in_world_readable_file_is_refused_when_loading(tmp_path: Path) -> None:
    """A config file holding a secret must be private to its owner."""
    path = _write(tmp_path, '[broker]\napi_secret = "s3cret"\n', mode=0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_settings(path)


def test_secrets_are_redacted_when_dumped(tmp_path: Path) -> None:
    """The config stored with a run and shown to operators never holds a secret."""
    path = _write(tmp_path, '[broker]\napi_key = "k"\napi_secret = "s3cret"\n')
    settings = load_settings(path)
    assert settings.broker.api_secret is not None
    assert settings.broker.api_secret.get_secret_value() == "s3cret"
    dumped = str(settings.redacted())
    assert "s3cret" not in dumped
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("section", "key", "url", "stored"),
    [
        (
            "database",
            "url",
            "postgresql+asyncpg://trader:TopSecret123@db.internal:5432/trading",
            "postgresql+asyncpg://trader:**redacted**@db.internal:5432/trading",
        ),
        (
            "feed",
            "rest_url",
            "https://ops:TopSecret123@proxy.internal:8443",
            "https://ops:**redacted**@proxy.internal:8443",
        ),
        ("database", "url", "sqlite+aiosqlite:///trader.db", "sqlite+aiosqlite:///trader.db"),
    ],
)
def test_url_passwords_are_redacted_when_dumped(
    section: str, key: str, url: str, stored: str
) -> None:
    """A password in a database or feed URL never reaches `runs.config`; the rest stays."""
    dumped = Settings(**{section: {key: url}}).redacted()
    assert dumped[section][key] == stored
    assert "TopSecret123" not in str(dumped)


def test_settings_are_frozen_when_built() -> None:
    """Components cannot mutate the shared settings tree."""
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.risk.max_drawdown = 0.5  # type: ignore[misc]
