"""Subscription bookkeeping for one Bybit v5 public linear connection.

Owns the kline topic names, the subscribe request frames, and the state of every topic on the
current connection (pending, confirmed, rejected), driven by the acks that
`trader.feeds.frames.parse_frame` produced. Bybit answers a bad subscription only in its ack and
then stays silent on that topic (reference bybit-v5.md A2), so nothing counts as subscribed until
its ack says so. Subscriptions belong to a connection (A8): after a reconnect every topic is
pending again.

It is sans-I/O: no sockets, no asyncio, no logging, no JSON encoding. It must not parse frames
(it takes typed `Ack` objects) and must not decide when to reconnect; the feed shell does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from trader.domain import INTERVAL_MS
from trader.errors import ConfigError, DataError
from trader.feeds.frames import Ack

_KLINE_FAMILY = "kline"
# Bybit's reply when the topic is already live on this connection; the stream keeps flowing,
# so it means the same as success (A2; Nautilus marks such a topic confirmed).
_ALREADY_SUBSCRIBED = "error:already subscribed"
_SUBSCRIBE_OP = "subscribe"
_SYMBOLS_KEY = "feed.symbols"


class TopicState(enum.Enum):
    """Where one topic stands on the current connection."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class AckOutcome(enum.Enum):
    """What one ack did to the book."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # not a subscribe ack, or a req_id that names none of our topics


def kline_topic(interval: str, symbol: str) -> str:
    """Build the kline topic name ``kline.{interval}.{symbol}``.

    Args:
        interval: A Bybit interval code such as ``"5"`` or ``"D"``.
        symbol: The upper-case exchange symbol, such as ``"BTCUSDT"``.

    Returns:
        The topic name.

    Raises:
        ConfigError: For an unsupported interval or a symbol that is not upper-case letters
            and digits; Bybit would reject either with only an ack to say so.
    """
    if interval not in INTERVAL_MS:
        raise ConfigError(f"unsupported kline interval {interval!r}", key="feed.interval")
    if not symbol.isalnum() or symbol != symbol.upper():
        raise ConfigError(
            f"symbol {symbol!r} must be upper-case letters and digits", key=_SYMBOLS_KEY
        )
    return f"{_KLINE_FAMILY}.{interval}.{symbol}"


def parse_topic(topic: str) -> tuple[str, str]:
    """Split a kline topic name into its interval and symbol; the inverse of `kline_topic`.

    Args:
        topic: A topic such as ``"kline.5.BTCUSDT"``.

    Returns:
        ``(interval, symbol)``.

    Raises:
        DataError: ``malformed_topic`` when the name is not ``kline.{interval}.{symbol}``.
    """
    parts = topic.split(".")
    if len(parts) != 3 or parts[0] != _KLINE_FAMILY or not parts[1] or not parts[2]:
        raise DataError("malformed_topic", f"{topic!r} is not kline.{{interval}}.{{symbol}}")
    return parts[1], parts[2]


class SubscriptionBook:
    """The subscribe state of a fixed list of topics on the current connection.

    Every request carries exactly one topic and uses that topic as its ``req_id``, so every ack
    names the topic it answers, and a rejected topic cannot take its neighbours down with it (A2).

    A rejection of a topic that has never been confirmed on any connection is a configuration
    fault (an unknown or delisted symbol): `startup_error` turns it into a `ConfigError`. A
    rejection of a topic that worked before (after a reconnect) is treated as the exchange's
    passing trouble: `retry_rejected` puts it back to pending for the next attempt.

    Args:
        topics: The topics to hold, in send order; duplicates are dropped.
        per_frame: The most subscribe requests to send in one batch; Bybit's spot limit of 10
            args per request is the tightest documented, and batches of 10 work everywhere (A3).

    Raises:
        ConfigError: When there are no topics or ``per_frame`` is below 1.
    """

    def __init__(self, topics: Sequence[str], *, per_frame: int = 10) -> None:
        if not topics:
            raise ConfigError("at least one topic is required", key=_SYMBOLS_KEY)
        if per_frame < 1:
            raise ConfigError(f"per_frame must be at least 1, got {per_frame!r}")
        # dict keeps insertion order, so requests go out in the order the config listed them.
        self._states: dict[str, TopicState] = dict.fromkeys(topics, TopicState.PENDING)
        self._per_frame = per_frame
        self._rejected: dict[str, str] = {}
        self._ever_confirmed: set[str] = set()

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic held, in send order."""
        return tuple(self._states)

    @property
    def all_confirmed(self) -> bool:
        """True once every topic is confirmed on the current connection."""
        return all(state is TopicState.CONFIRMED for state in self._states.values())

    @property
    def rejected(self) -> Mapping[str, str]:
        """Rejected topics on the current connection, each with Bybit's ``ret_msg``."""
        return dict(self._rejected)

    def state(self, topic: str) -> TopicState:
        """Return the state of one held topic.

        Raises:
            KeyError: When the topic is not held.
        """
        return self._states[topic]

    def requests(self) -> list[dict[str, Any]]:
        """Build one subscribe request per pending topic.

        Rejected topics are left out until `retry_rejected` makes them pending again; confirmed
        ones are left out because resending them only earns an "already subscribed" reply.

        Returns:
            Request objects ``{"op": "subscribe", "req_id": topic, "args": [topic]}``, in order.
        """
        return [
            {"op": _SUBSCRIBE_OP, "req_id": topic, "args": [topic]}
            for topic, state in self._states.items()
            if state is TopicState.PENDING
        ]

    def batches(self) -> list[list[dict[str, Any]]]:
        """Group `requests` into send batches of at most ``per_frame`` requests each."""
        pending = self.requests()
        return [
            pending[start : start + self._per_frame]
            for start in range(0, len(pending), self._per_frame)
        ]

    def on_ack(self, ack: Ack) -> AckOutcome:
        """Apply one ack to the book.

        Args:
            ack: A parsed ack frame.

        Returns:
            `AckOutcome.CONFIRMED` on success or "already subscribed", `AckOutcome.REJECTED` on
            any other failure (the ``ret_msg`` lands in `rejected`), and `AckOutcome.UNKNOWN`
            for an ack that is not a subscribe ack or whose ``req_id`` is none of our topics
            (such as ``""`` from a request sent without one). Unknown acks change nothing.
        """
        topic = ack.req_id
        if ack.op != _SUBSCRIBE_OP or not isinstance(topic, str) or topic not in self._states:
            return AckOutcome.UNKNOWN
        if ack.success or ack.ret_msg.startswith(_ALREADY_SUBSCRIBED):
            self._states[topic] = TopicState.CONFIRMED
            self._rejected.pop(topic, None)
            self._ever_confirmed.add(topic)
            return AckOutcome.CONFIRMED
        self._states[topic] = TopicState.REJECTED
        self._rejected[topic] = ack.ret_msg
        return AckOutcome.REJECTED

    def startup_error(self) -> ConfigError | None:
        """Return the configuration error for topics rejected before they ever worked.

        Returns:
            A `ConfigError` naming each such symbol and Bybit's reason, or None when every
            rejected topic has been confirmed on some earlier connection.
        """
        never_worked = {
            t: msg for t, msg in self._rejected.items() if t not in self._ever_confirmed
        }
        if not never_worked:
            return None
        details = "; ".join(f"{_symbol_of(t)} ({t}): {msg}" for t, msg in never_worked.items())
        return ConfigError(f"Bybit rejected the subscription for {details}", key=_SYMBOLS_KEY)

    def retry_rejected(self) -> list[str]:
        """Make every rejected topic pending again, for the next subscribe attempt.

        Returns:
            The topics moved back to pending, in send order.
        """
        moved = [topic for topic in self._states if topic in self._rejected]
        for topic in moved:
            self._states[topic] = TopicState.PENDING
        self._rejected.clear()
        return moved

    def reset_for_reconnect(self) -> None:
        """Mark every topic pending: a new connection starts with no subscriptions (A8)."""
        for topic in self._states:
            self._states[topic] = TopicState.PENDING
        self._rejected.clear()


def _symbol_of(topic: str) -> str:
    """The symbol a topic names: its last dot-separated part in every public v5 family."""
    return topic.rsplit(".", 1)[-1]
