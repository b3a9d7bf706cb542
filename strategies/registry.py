"""Builds a strategy from its configured name.

Owns the mapping from `strategy.name` to a Strategy instance. It must not read configuration
files or the environment: the caller passes the already-validated settings values.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.baselines import BuyAndHold, EmaCross, NoOp, RandomStrategy

#: Names `build_strategy` accepts now; `hrm` and `flat` arrive with the model issue.
AVAILABLE = ("ema_cross", "buy_hold", "random", "noop")


def build_strategy(name: str, *, seed: int, ema_fast: int = 21, ema_slow: int = 50) -> Strategy:
    """Return the strategy named `name`.

    Raises:
        ValueError: the name is not one of `AVAILABLE`.
    """
    if name == "ema_cross":
        return EmaCross(fast=ema_fast, slow=ema_slow)
    if name == "buy_hold":
        return BuyAndHold()
    if name == "random":
        return RandomStrategy(seed=seed)
    if name == "noop":
        return NoOp()
    raise ValueError(
        f"strategy {name!r} is not available yet; choose one of {', '.join(AVAILABLE)}"
    )
