"""Deterministic client order ids (Bybit `orderLinkId`) derived from (run, symbol, bar, leg).

Owns the id format. The same inputs always give the same id, so a retried submit carries the id
the exchange already saw and is rejected as a duplicate (Bybit error 110072) instead of doubling
a position; the paper broker ignores it the same way. It must not keep state or read the clock.

Format: ``<leg>-<28 hex digits>``, at most 36 characters from ``[A-Za-z0-9_-]`` (Bybit's rule).
The hex part is a 112-bit BLAKE2b digest of the JSON array ``[run_id, symbol, bar_start_ms,
leg]`` (JSON, not a joined string, so no two distinct inputs share a preimage); a collision
between any two of a run's ids is therefore out of reach. The leg prefix keeps ids readable in
the exchange UI and the database.
"""

from __future__ import annotations

import hashlib
import json
import re

#: Bybit's orderLinkId limit.
MAX_CLIENT_ORDER_ID_CHARS = 36
#: 14 bytes = 28 hex characters, leaving 8 characters for the longest leg and its separator.
_DIGEST_BYTES = 14
#: Legs the engine uses: a flip is a "close" followed by an "open".
LEGS: frozenset[str] = frozenset({"open", "close", "sl", "tp", "flatten", "reduce"})
_LEG_PATTERN = re.compile(r"[a-z0-9_]{1,7}")
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,36}")


def client_order_id(run_id: str, symbol: str, bar_start_ms: int, leg: str) -> str:
    """Return the deterministic client order id of one order leg.

    Args:
        run_id: the run the order belongs to.
        symbol: exchange symbol.
        bar_start_ms: start of the bar whose decision (or protective exit) created the order.
        leg: what the order does; one of `LEGS` in practice, any 1-7 characters of
            ``[a-z0-9_]`` accepted.

    Raises:
        ValueError: the leg is empty, too long or uses other characters.
    """
    if not _LEG_PATTERN.fullmatch(leg):
        raise ValueError(f"leg {leg!r} must be 1-7 characters of [a-z0-9_]")
    preimage = json.dumps([run_id, symbol, bar_start_ms, leg], separators=(",", ":"))
    digest = hashlib.blake2b(preimage.encode(), digest_size=_DIGEST_BYTES).hexdigest()
    return f"{leg}-{digest}"


def is_valid_client_order_id(value: str) -> bool:
    """True when `value` satisfies Bybit's orderLinkId rule (length and alphabet)."""
    return _ID_PATTERN.fullmatch(value) is not None
