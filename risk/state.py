"""Trading states of the risk layer.

Owns the TradingState enum and nothing else, so every package can name a state without
importing risk logic.
"""

from __future__ import annotations

from enum import StrEnum


class TradingState(StrEnum):
    """ACTIVE trades normally; REDUCING lets only reducing orders pass; HALTED opens nothing."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"
