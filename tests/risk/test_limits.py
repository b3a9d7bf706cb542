"""The layer's limits: built straight from the `[risk]` settings, and refused when nonsensical."""

from __future__ import annotations

from typing import Any

import pytest

from risk.limits import RiskLimits, limit_names
from tests.risk.builders import risk_limits
from trader.config import RiskSettings

#: The `[risk]` keys of the contract (CONTRACT.md, Configuration).
CONTRACT_KEYS = {
    "max_drawdown",
    "soft_drawdown",
    "max_daily_loss",
    "max_position_notional_usdt",
    "max_gross_exposure",
    "max_leverage",
    "max_orders_per_minute",
    "min_confidence",
    "stale_feed_bars",
}


def test_limits_build_from_settings_when_names_match() -> None:
    """Every contract `[risk]` key maps by name onto RiskLimits, so the root passes them through."""
    settings = RiskSettings()
    assert limit_names() >= CONTRACT_KEYS
    limits = RiskLimits(**settings.model_dump(include=set(limit_names())))
    assert {key: getattr(limits, key) for key in CONTRACT_KEYS} == settings.model_dump(
        include=CONTRACT_KEYS
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_drawdown": 0.0}, "max_drawdown"),
        ({"max_orders_per_minute": 0}, "max_orders_per_minute"),
        ({"max_leverage": float("nan")}, "max_leverage"),
        ({"soft_drawdown": 0.3}, "soft_drawdown"),
        ({"correlation_threshold": 1.5}, "correlation_threshold"),
    ],
)
def test_limits_are_refused_when_out_of_range(overrides: dict[str, Any], message: str) -> None:
    """Non-positive caps, a soft limit above the hard one, or a bad threshold fail at build."""
    with pytest.raises(ValueError, match=message):
        risk_limits(**overrides)
