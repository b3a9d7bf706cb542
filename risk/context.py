"""The account and instrument facts the engine hands the risk layer with each decision.

Owns `RiskContext`, the explicit inputs of `RiskLayer.review` that risk cannot know by itself:
exchange time, mark-to-market equity, every position (pending orders included) and the
instrument rules of the decision's symbol. Prices, the ATR and the last bar per symbol are not
here: the layer keeps them from the bars it is fed (`RiskLayer.on_bar`).

It must not hold behaviour or import anything from `trader` but the domain types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from risk.gate import SymbolLimits


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What `review` needs besides the decision.

    Attributes:
        now_ms: exchange time of the decision (the slice's close), epoch ms.
        equity: mark-to-market equity in USDT.
        positions: signed quantity per symbol once already-submitted orders fill (so two
            decisions never double up); symbols with no position may be absent.
        limits: qty step, minimum qty and minimum notional of the decision's symbol.
        risk_budget: the strategic module's risk budget in [0, 1], when the strategy gives one;
            None leaves sizing unscaled by it.
    """

    now_ms: int
    equity: Decimal
    positions: Mapping[str, Decimal]
    limits: SymbolLimits
    risk_budget: float | None = None
