"""Logging: JSON lines off a TTY, secrets redacted, levels filtered."""

from __future__ import annotations

import io
import json

import structlog
from pydantic import SecretStr

from trader.logs import REDACTED, configure_logging


def _capture(level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()  # not a TTY, like journald or CI
    configure_logging(level, "auto", stream=stream)
    return stream


def test_events_are_json_lines_when_stderr_is_not_a_tty() -> None:
    """Each event is one JSON object with its name, level, UTC timestamp and fields."""
    stream = _capture()
    structlog.get_logger().info("order_submitted", symbol="BTCUSDT", qty=0.01)
    event = json.loads(stream.getvalue().strip())
    assert event["event"] == "order_submitted"
    assert event["level"] == "info"
    assert event["symbol"] == "BTCUSDT"
    assert event["timestamp"].endswith("Z")


def test_secrets_are_redacted_when_logged() -> None:
    """Secret-looking keys and SecretStr values never reach the output."""
    stream = _capture()
    structlog.get_logger().warning(
        "connected",
        api_secret="s3cret",
        password="hunter2",
        token=SecretStr("t0ken"),
        credential=SecretStr("c0ntent"),
    )
    text = stream.getvalue()
    for secret in ("s3cret", "hunter2", "t0ken", "c0ntent"):
        assert secret not in text
    assert json.loads(text)["api_secret"] == REDACTED


def test_debug_events_are_dropped_when_level_is_info() -> None:
    """Events below the configured level produce no output."""
    stream = _capture("INFO")
    structlog.get_logger().debug("noisy_detail")
    assert stream.getvalue() == ""
