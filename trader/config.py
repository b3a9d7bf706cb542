"""The one typed, frozen settings tree.

Owns every configurable default, the TOML + environment loading rules of CONTRACT.md, and the
translation of validation failures into one operator line naming the key. It is the only module
that reads `os.environ`. It must not build components: `trader.daemon` does that with the
sections it hands out.

Precedence, highest first: `TRADER_<SECTION>__<KEY>` environment variables, then the TOML file
(`--config`, else `./trader.toml`, else `/etc/trader/trader.toml`), then the defaults below.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from trader.errors import ConfigError
from trader.logs import REDACTED

DEFAULT_CONFIG_PATHS = (Path("trader.toml"), Path("/etc/trader/trader.toml"))
SECRET_KEYS = ("broker.api_key", "broker.api_secret", "mqtt.password", "mqtt.control_secret")
#: URLs that may carry a password in their userinfo (`postgresql+asyncpg://user:pw@host/db`);
#: `mqtt.url` cannot (its credentials are `mqtt.username` and `mqtt.password`).
URL_KEYS = ("database.url", "feed.ws_url", "feed.rest_url")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Interval = Literal["1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D"]
StrategyName = Literal["hrm", "flat", "ema_cross", "buy_hold", "random", "noop"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where the run lives and how the single writer batches its transactions."""

    url: str = "sqlite+aiosqlite:///trader.db"
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 5_000
    flush_interval_ms: Annotated[int, Field(ge=1, le=60_000)] = 250
    flush_max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    queue_max_batches: Annotated[int, Field(ge=1, le=1_000)] = 8
    write_retry_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    write_retry_backoff_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.2
    enqueue_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 30.0


class FeedSettings(_Section):
    """The Bybit public stream and REST market API."""

    ws_url: str = "wss://stream.bybit.com/v5/public/linear"
    rest_url: str = "https://api.bybit.com"
    # NoDecode: the environment gives `BTCUSDT,ETHUSDT`, not JSON.
    symbols: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT",)
    interval: Interval = "5"
    ping_interval_s: Annotated[float, Field(gt=0.0, le=600.0)] = 20.0
    ping_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 10.0
    # Bybit pushes every 1-60 s, so a topic silent past this forces a reconnect.
    staleness_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = 90.0
    event_queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1_024
    # `trader run`: a confirm missing this long after its bar's close (exchange time) is
    # fetched over REST instead.
    confirm_grace_s: Annotated[float, Field(ge=0.0, le=3_600.0)] = 5.0
    # `trader run`: connecting and subscribing at start-up must finish within this.
    startup_timeout_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = 60.0
    # REST calls (backfill) tried this often before the daemon gives up and exits non-zero.
    rest_max_attempts: Annotated[int, Field(ge=1, le=1_000)] = 8
    # After an HTTP 403 (Bybit's IP ban) all REST waits this long; Bybit asks for 10 minutes.
    rest_forbidden_pause_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 600.0

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("symbols")
    @classmethod
    def _upper_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is required")
        for symbol in value:
            if not symbol.isalnum() or symbol != symbol.upper():
                raise ValueError(f"symbol {symbol!r} must be upper-case letters and digits")
        return value


#: An HMAC key shorter than this is guessable; `openssl rand -hex 32` gives 64.
_MIN_CONTROL_SECRET_CHARS = 16


class MqttSettings(_Section):
    """The optional MQTT bus; `url` unset means no MQTT. `mqtts://` connects over TLS."""

    url: str | None = None
    topic_prefix: str = "trader"
    username: str | None = None
    password: SecretStr | None = None
    # HMAC-SHA256 key of signed control commands (resume); unset: resume over MQTT is refused.
    control_secret: SecretStr | None = None
    # None lets the client pick a random id; two daemons must never share a fixed one.
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3_600)] = 30
    # Connect, subscribe and the broker's acknowledgement of a QoS 1 publish must finish within.
    timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 10.0
    # mqtts:// only: CA bundle (None: the system trust store) and an optional client certificate.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Telemetry (decision, heartbeat) waiting for the broker; the oldest is dropped when full.
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1_024
    # Order, fill and risk events waiting while the broker is unreachable (see trader.bus).
    reliable_queue_size: Annotated[int, Field(ge=1, le=10_000_000)] = 65_536
    max_inflight: Annotated[int, Field(ge=1, le=1_000)] = 16
    reconnect_base_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.5
    reconnect_cap_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = 30.0
    # A signed command older (or further in the future) than this is rejected as stale.
    control_max_age_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = 30.0

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        host, _, port = rest.partition(":")
        if not sep or scheme not in ("mqtt", "mqtts") or not host or "/" in rest:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        if port and not (port.isdigit() and 0 < int(port) < 65_536):
            raise ValueError(f"port {port!r} is not a TCP port")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or value.endswith("/"):
            raise ValueError("must be non-empty without a leading or trailing '/'")
        if any(char in value for char in "+#\0"):
            raise ValueError("must not contain MQTT wildcards (+, #) or NUL")
        return value

    @field_validator("control_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_CONTROL_SECRET_CHARS:
            raise ValueError(f"must be at least {_MIN_CONTROL_SECRET_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(tls_files) and not (self.url or "").startswith("mqtts://"):
            raise ValueError("tls_* files need an mqtts:// url")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.reconnect_cap_s < self.reconnect_base_s:
            raise ValueError("reconnect_cap_s must be at least reconnect_base_s")
        return self


class BrokerSettings(_Section):
    """Execution: the paper simulator's costs and the starting account."""

    mode: Literal["paper", "live"] = "paper"
    taker_fee: Annotated[float, Field(ge=0.0, lt=0.1)] = 0.00055
    maker_fee: Annotated[float, Field(ge=-0.01, lt=0.1)] = 0.0002
    slippage_bps: Annotated[float, Field(ge=0.0, le=1_000.0)] = 1.0
    initial_equity: Annotated[float, Field(gt=0.0)] = 10_000.0
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None


class RiskSettings(_Section):
    """Limits enforced by the risk gate; fractions are of equity unless the name says otherwise."""

    max_drawdown: Fraction = 0.20
    soft_drawdown: Fraction = 0.10
    max_daily_loss: Fraction = 0.05
    max_position_notional_usdt: Annotated[float, Field(gt=0.0)] = 5_000.0
    max_gross_exposure: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    max_leverage: Annotated[float, Field(gt=0.0, le=100.0)] = 3.0
    max_orders_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 60
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    stale_feed_bars: Annotated[int, Field(ge=1, le=1_000)] = 3
    # A bar that reached us (by exchange time) this long after its close is processed, so
    # features and model state stay continuous, but gets HOLD instead of an order.
    max_bar_age_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 30.0

    @model_validator(mode="after")
    def _soft_below_hard(self) -> RiskSettings:
        if self.soft_drawdown > self.max_drawdown:
            raise ValueError(
                f"soft_drawdown ({self.soft_drawdown}) must not exceed max_drawdown "
                f"({self.max_drawdown})"
            )
        return self


#: EMA periods the feature buffer tracks, for `ema_cross`.
_EMA_FAST = (8, 21, 50)
_EMA_SLOW = (21, 50, 200)


class StrategySettings(_Section):
    """Which strategy decides, and its seed."""

    name: StrategyName = "ema_cross"
    seed: int = 7
    # Plain ints checked below, not Literal[8, 21, 50]: a Literal of ints refuses the string
    # "8" that an environment variable gives.
    ema_fast: int = 21
    ema_slow: int = 50

    @field_validator("ema_fast", "ema_slow")
    @classmethod
    def _tracked_period(cls, value: int, info: ValidationInfo) -> int:
        allowed = _EMA_FAST if info.field_name == "ema_fast" else _EMA_SLOW
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
        return value

    @model_validator(mode="after")
    def _slow_after_fast(self) -> StrategySettings:
        if self.ema_slow <= self.ema_fast:
            raise ValueError(f"ema_slow ({self.ema_slow}) must exceed ema_fast ({self.ema_fast})")
        return self


class ModelSettings(_Section):
    """The HRM checkpoint and where it runs."""

    checkpoint: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategic_every: Annotated[int, Field(ge=10, le=20)] = 16


class FeatureSettings(_Section):
    """Window lengths of the rolling feature buffer."""

    tactical_window: Annotated[int, Field(ge=32, le=64)] = 64
    strategic_window: Annotated[int, Field(ge=64, le=1024)] = 256
    scale_window: Annotated[int, Field(ge=32, le=4096)] = 256
    clip: Annotated[float, Field(gt=0.0, le=100.0)] = 5.0


class RewardSettings(_Section):
    """HICRA weights by decision type (seed 000: strategic 2.0-2.5, tactical 1.3-1.5)."""

    strategic_weight: Annotated[float, Field(ge=2.0, le=2.5)] = 2.0
    tactical_weight: Annotated[float, Field(ge=1.3, le=1.5)] = 1.4
    procedural_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


class LoggingSettings(_Section):
    """Log level and format; `auto` is JSON lines off a TTY, a console renderer on one."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class RecorderSettings(_Section):
    """`trader record`: when a recording file is rotated and how often it reaches the OS."""

    # Uncompressed frame bytes per file (gzip shrinks them several-fold on disk).
    rotate_max_bytes: Annotated[int, Field(ge=1_024, le=100_000_000_000)] = 100_000_000
    rotate_interval_s: Annotated[float, Field(ge=1.0, le=604_800.0)] = 3_600.0
    # The most a crash can lose: buffered lines reach the OS at least this often.
    flush_interval_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    compress: bool = True


class Settings(BaseSettings):
    """The whole configuration; frozen, unknown keys rejected."""

    model_config = SettingsConfigDict(
        env_prefix="TRADER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    database: DatabaseSettings = DatabaseSettings()
    feed: FeedSettings = FeedSettings()
    mqtt: MqttSettings = MqttSettings()
    broker: BrokerSettings = BrokerSettings()
    risk: RiskSettings = RiskSettings()
    strategy: StrategySettings = StrategySettings()
    model: ModelSettings = ModelSettings()
    features: FeatureSettings = FeatureSettings()
    rewards: RewardSettings = RewardSettings()
    logging: LoggingSettings = LoggingSettings()
    recorder: RecorderSettings = RecorderSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain JSON-able data with every secret removed (for `runs.config`)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            if data[section].get(key) is not None:
                data[section][key] = REDACTED
        for dotted in URL_KEYS:
            section, key = dotted.split(".")
            if data[section].get(key) is not None:
                data[section][key] = redact_url(data[section][key])
        return data


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo replaced (user, host and path kept)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def find_config_file(explicit: Path | None) -> Path | None:
    """The file CONTRACT.md's search order selects, or None for defaults only."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist", key="--config")
        return explicit
    return next((path for path in DEFAULT_CONFIG_PATHS if path.is_file()), None)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration.

    Args:
        path: an explicit TOML file (`--config`); None searches the default locations.
        **overrides: section dicts that command-line flags set (they beat the file, not env).

    Raises:
        ConfigError: the file is unreadable, malformed, or a key is unknown or out of range.
    """
    file = find_config_file(path)
    data: dict[str, Any] = _read_toml(file) if file is not None else {}
    for section, values in overrides.items():
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section}: must be a table", key=section)
        data[section].update(values)
    try:
        return Settings(**data)
    except ValidationError as exc:
        message = _describe(exc, file, from_options=bool(overrides))
        raise ConfigError(message, key=_first_key(exc)) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration in TRADER_* environment: {exc}") from exc


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}", key="--config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}", key="--config") from exc
    _check_secret_file_mode(file, data)
    return data


def _check_secret_file_mode(file: Path, data: dict[str, Any]) -> None:
    """Secrets may live in a file only when no one but its owner can read it."""
    holds_secret = any(
        isinstance(data.get(dotted.split(".")[0]), dict)
        and data[dotted.split(".")[0]].get(dotted.split(".")[1]) is not None
        for dotted in SECRET_KEYS
    )
    if holds_secret and file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"config file {file} holds secrets but is readable by others; chmod 600 it "
            "or pass secrets through TRADER_* environment variables",
            key="--config",
        )


def _first_key(exc: ValidationError) -> str | None:
    errors = exc.errors()
    return ".".join(str(part) for part in errors[0]["loc"]) if errors else None


def _describe(exc: ValidationError, file: Path | None, *, from_options: bool) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif key not in SECRET_KEYS and not isinstance(error.get("input"), dict):
            message = f"{message} (got {error.get('input')!r})"
        parts.append(f"{key}: {message}")
    sources = [str(file)] if file is not None else []
    sources.append("TRADER_* environment")
    if from_options:
        sources.append("command-line options")
    return f"invalid configuration (from {', '.join(sources)}): " + "; ".join(parts)


def environ_flag(name: str) -> bool:
    """Read a boolean process flag such as `TRADER_REQUIRE_SERVICES`."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def systemd_notify_env() -> tuple[str | None, int | None]:
    """Read systemd's `NOTIFY_SOCKET` and `WATCHDOG_USEC` for `trader.notify.SystemdNotifier`.

    Returns:
        The notify socket address (None when unset or empty) and the watchdog timeout in
        microseconds (None when unset, not a positive integer, or zero: watchdog disabled).
    """
    socket_address = os.environ.get("NOTIFY_SOCKET", "").strip() or None
    usec_text = os.environ.get("WATCHDOG_USEC", "").strip()
    # systemd treats an unparsable value as "no watchdog"; so do we rather than fail the start.
    watchdog_usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
    return socket_address, watchdog_usec
