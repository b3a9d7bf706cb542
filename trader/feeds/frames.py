"""Parsing of Bybit v5 public linear websocket frames into frozen typed objects.

Owns the one parse step of the websocket edge (reference bybit-v5.md A2, A4-A7): a text frame
(or its already-decoded JSON object) becomes a `KlinePush`, an `Ack` or a `Pong`, or raises
`DataError` with a stable reason:

    unparseable_frame   not JSON, or JSON that is not an object
    unknown_frame       an object that is none of the frames we subscribe to
    malformed_kline     a kline push with a missing or wrong-typed field

Fields are read by name (Bybit's key order varies) and every element of ``data[]`` is parsed,
because one push may carry the closing bar and the next one. Types follow Bybit exactly:
``start``, ``end``, ``ts`` and ``timestamp`` are JSON integers; prices, volume, turnover and
``interval`` are strings; ``confirm`` is a boolean.

It is sans-I/O: no sockets, no asyncio, no logging. It must not judge values (NaN, crossed
prices, alignment); `trader.feeds.validation` does that, and `trader.feeds.confirmed` decides
which items become bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from trader.errors import DataError

_KLINE_PREFIX = "kline."


@dataclass(frozen=True, slots=True)
class KlineItem:
    """One element of a kline push's ``data[]``: the whole current candle, not a delta."""

    start_ms: int
    end_ms: int
    interval: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    confirm: bool
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class KlinePush:
    """A ``kline.{interval}.{symbol}`` push; ``ts_ms`` is the exchange's push time."""

    topic: str
    symbol: str
    interval: str
    ts_ms: int
    items: tuple[KlineItem, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a subscribe/unsubscribe (or other op) request.

    ``req_id`` echoes what was sent: Bybit documents a string but ccxt sends an integer, and a
    request without one is answered with ``""``.
    """

    op: str
    success: bool
    ret_msg: str
    req_id: str | int
    conn_id: str


@dataclass(frozen=True, slots=True)
class Pong:
    """The reply to our application ``ping`` (linear: op "ping" with ret_msg "pong")."""

    req_id: str | int


Frame = KlinePush | Ack | Pong


def parse_frame(raw: str | bytes | dict[str, Any]) -> Frame:
    """Parse one websocket text frame.

    Args:
        raw: The frame as received (text or bytes), or the JSON object a recording already
            decoded.

    Returns:
        The typed frame.

    Raises:
        DataError: ``unparseable_frame``, ``unknown_frame`` or ``malformed_kline``.
    """
    if isinstance(raw, dict):
        obj: Any = raw
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DataError("unparseable_frame", f"not JSON: {_preview(raw)}") from exc
    if not isinstance(obj, dict):
        raise DataError("unparseable_frame", f"not a JSON object: {_preview(raw)}")

    topic = obj.get("topic")
    if topic is not None:
        if isinstance(topic, str) and topic.startswith(_KLINE_PREFIX):
            return _parse_kline(topic, obj)
        raise DataError("unknown_frame", f"topic {topic!r}")
    op = obj.get("op")
    if isinstance(op, str):
        ret_msg = obj.get("ret_msg", "")
        if op == "pong" or (op == "ping" and ret_msg == "pong"):
            return Pong(req_id=_req_id(obj))
        success = obj.get("success")
        if isinstance(success, bool) and isinstance(ret_msg, str):
            conn_id = obj.get("conn_id", "")
            return Ack(
                op=op,
                success=success,
                ret_msg=ret_msg,
                req_id=_req_id(obj),
                conn_id=conn_id if isinstance(conn_id, str) else str(conn_id),
            )
    raise DataError("unknown_frame", _preview(raw))


def _parse_kline(topic: str, obj: dict[str, Any]) -> KlinePush:
    """Parse a push whose topic starts with ``kline.``."""
    parts = topic.split(".", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise DataError("malformed_kline", f"topic {topic!r} is not kline.{{interval}}.{{symbol}}")
    interval, symbol = parts[1], parts[2]
    if obj.get("type") != "snapshot":
        raise DataError("malformed_kline", f"type {obj.get('type')!r}", symbol=symbol)
    ts_ms = obj.get("ts")
    if type(ts_ms) is not int:
        raise DataError("malformed_kline", f"ts {ts_ms!r} is not an integer", symbol=symbol)
    data = obj.get("data")
    if not isinstance(data, list) or not data:
        raise DataError("malformed_kline", "data is not a non-empty array", symbol=symbol)
    items = tuple(_parse_item(element, symbol) for element in data)
    return KlinePush(topic=topic, symbol=symbol, interval=interval, ts_ms=ts_ms, items=items)


def _parse_item(element: Any, symbol: str) -> KlineItem:
    """Parse one ``data[]`` element by field name."""
    if not isinstance(element, dict):
        raise DataError("malformed_kline", "data element is not an object", symbol=symbol)
    try:
        start_ms = element["start"]
        end_ms = element["end"]
        timestamp_ms = element["timestamp"]
        confirm = element["confirm"]
        interval = element["interval"]
        texts = (
            element["open"],
            element["high"],
            element["low"],
            element["close"],
            element["volume"],
            element["turnover"],
        )
    except KeyError as exc:
        raise DataError("malformed_kline", f"missing field {exc.args[0]!r}", symbol=symbol) from exc
    # `type(...) is int` rather than isinstance: JSON true/false must not pass as 1/0.
    if type(start_ms) is not int or type(end_ms) is not int or type(timestamp_ms) is not int:
        raise DataError(
            "malformed_kline",
            f"start/end/timestamp must be integers: {start_ms!r} {end_ms!r} {timestamp_ms!r}",
            symbol=symbol,
        )
    if type(confirm) is not bool:
        raise DataError("malformed_kline", f"confirm {confirm!r} is not a boolean", symbol=symbol)
    if type(interval) is not str:
        raise DataError("malformed_kline", f"interval {interval!r} is not a string", symbol=symbol)
    values: list[float] = []
    for text in texts:
        # Bybit sends decimals as strings; a JSON number here means a different producer.
        if type(text) is not str:
            raise DataError(
                "malformed_kline", f"price field {text!r} is not a string", symbol=symbol
            )
        try:
            values.append(float(text))
        except ValueError as exc:
            raise DataError("malformed_kline", f"not a decimal: {text!r}", symbol=symbol) from exc
    open_, high, low, close, volume, turnover = values
    return KlineItem(
        start_ms=start_ms,
        end_ms=end_ms,
        interval=interval,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        turnover=turnover,
        confirm=confirm,
        timestamp_ms=timestamp_ms,
    )


def _req_id(obj: dict[str, Any]) -> str | int:
    """The echoed request id: a string or an integer, ``""`` when absent or of another type."""
    req_id = obj.get("req_id", "")
    if isinstance(req_id, str) or (type(req_id) is int):
        return req_id
    return ""


def _preview(raw: object, limit: int = 120) -> str:
    """A short, single-line rendering of the offending input for error details."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text if len(text) <= limit else text[:limit] + "..."
