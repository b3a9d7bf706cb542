"""Builds a strategy from its configured name.

Owns the mapping from `strategy.name` to a Strategy instance. It must not read configuration
files or the environment: the caller passes the already-validated settings values. The model
strategies (`hrm`, `flat`) import torch, so they are imported only when asked for.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.baselines import BuyAndHold, EmaCross, NoOp, RandomStrategy

#: Names `build_strategy` accepts.
AVAILABLE = ("hrm", "flat", "ema_cross", "buy_hold", "random", "noop")


def build_strategy(
    name: str,
    *,
    seed: int,
    ema_fast: int = 21,
    ema_slow: int = 50,
    checkpoint: str | None = None,
    device: str = "auto",
    strategic_every: int = 16,
    schema_hash: str | None = None,
    feature_clip: float = 5.0,
    taker_fee: float | None = None,
) -> Strategy:
    """Return the strategy named `name`.

    `checkpoint`, `device`, `strategic_every`, `schema_hash`, `feature_clip` and `taker_fee`
    matter only to `hrm` and `flat` (see `strategies.hrm.build_hrm_strategy`).

    Raises:
        ValueError: the name is not one of `AVAILABLE`.
        ConfigError: an `hrm`/`flat` checkpoint cannot be used with the running features.
    """
    if name in ("hrm", "flat"):
        from strategies.hrm import build_hrm_strategy  # torch loads only for model strategies

        return build_hrm_strategy(
            name,
            checkpoint=checkpoint,
            device=device,
            strategic_every=strategic_every,
            seed=seed,
            schema_hash=schema_hash,
            feature_clip=feature_clip,
            taker_fee=taker_fee,
        )
    if name == "ema_cross":
        return EmaCross(fast=ema_fast, slow=ema_slow)
    if name == "buy_hold":
        return BuyAndHold()
    if name == "random":
        return RandomStrategy(seed=seed)
    if name == "noop":
        return NoOp()
    raise ValueError(f"strategy {name!r} is not available; choose one of {', '.join(AVAILABLE)}")
