"""The numbers the risk layer enforces, as one frozen keyword-only value.

Owns `RiskLimits`. Its first nine fields carry the names of the `[risk]` settings of the
contract, so the composition root can build it with
``RiskLimits(**settings.risk.model_dump(include=limit_names()))``; the rest tune the full layer
and default to the values documented on each field (add a setting of the same name when an
operator needs to change one, and it is passed through the same way).

It must not read configuration files or the environment: the composition root passes values in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimits:
    """Limits of the risk layer; fractions are of equity unless the name says otherwise.

    Attributes:
        max_drawdown: drawdown from peak mark-to-market equity that halts and flattens.
        soft_drawdown: drawdown that sets REDUCING (only reducing orders pass).
        max_daily_loss: loss since the start of the UTC day that halts and flattens.
        max_position_notional_usdt: largest absolute position value per symbol.
        max_gross_exposure: largest sum of absolute position values, as a multiple of equity.
        max_leverage: largest single position value as a multiple of equity.
        max_orders_per_minute: orders allowed in any minute of exchange time.
        min_confidence: decisions less confident than this open nothing.
        stale_feed_bars: a symbol missing this many bars opens nothing, nor on its first bar
            back after such a gap.
        soft_release: REDUCING lifts below ``soft_drawdown * soft_release`` (hysteresis).
        max_price_jump: a close that moved more than this fraction from the previous close
            opens nothing on that bar.
        max_correlated_exposure: largest value of positions that move together, as a multiple of
            equity.
        correlation_threshold: positions whose directional return correlation is at least this
            count together against `max_correlated_exposure`.
        correlation_window_bars: bars of returns the rolling correlation looks back over.
        correlation_min_bars: fewest common bars a correlation is computed from (below it, two
            symbols are not counted together).
        atr_period: bars of Wilder's average true range.
        risk_per_trade: equity fraction a position loses at its ATR stop (volatility target).
        stop_atr_multiple: default stop-loss distance in ATRs (also the sizing stop).
        take_profit_atr_multiple: default take-profit distance in ATRs.
    """

    max_drawdown: float
    soft_drawdown: float
    max_daily_loss: float
    max_position_notional_usdt: float
    max_gross_exposure: float
    max_leverage: float
    max_orders_per_minute: int
    min_confidence: float
    stale_feed_bars: int
    soft_release: float = 0.5
    max_price_jump: float = 0.2
    max_correlated_exposure: float = 1.0
    correlation_threshold: float = 0.7
    correlation_window_bars: int = 96
    correlation_min_bars: int = 24
    atr_period: int = 14
    risk_per_trade: float = 0.01
    stop_atr_multiple: float = 2.0
    take_profit_atr_multiple: float = 3.0

    def __post_init__(self) -> None:
        positive = {
            "max_drawdown": self.max_drawdown,
            "max_daily_loss": self.max_daily_loss,
            "max_position_notional_usdt": self.max_position_notional_usdt,
            "max_gross_exposure": self.max_gross_exposure,
            "max_leverage": self.max_leverage,
            "max_orders_per_minute": self.max_orders_per_minute,
            "stale_feed_bars": self.stale_feed_bars,
            "max_price_jump": self.max_price_jump,
            "max_correlated_exposure": self.max_correlated_exposure,
            "atr_period": self.atr_period,
            "risk_per_trade": self.risk_per_trade,
            "stop_atr_multiple": self.stop_atr_multiple,
            "take_profit_atr_multiple": self.take_profit_atr_multiple,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0 <= self.soft_drawdown <= self.max_drawdown:
            raise ValueError(
                f"soft_drawdown ({self.soft_drawdown}) must be in [0, max_drawdown "
                f"({self.max_drawdown})]"
            )
        if not -1.0 <= self.correlation_threshold <= 1.0:
            raise ValueError(
                f"correlation_threshold must be in [-1, 1], got {self.correlation_threshold}"
            )


def limit_names() -> frozenset[str]:
    """The field names of `RiskLimits`: the settings keys it takes."""
    return frozenset(field.name for field in fields(RiskLimits))
