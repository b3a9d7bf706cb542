"""Tests for trader.feeds.subscriptions: topic names, subscribe requests and ack bookkeeping."""

from __future__ import annotations

import pytest

from trader.errors import ConfigError, DataError
from trader.feeds.frames import Ack, parse_frame
from trader.feeds.subscriptions import (
    AckOutcome,
    SubscriptionBook,
    TopicState,
    kline_topic,
    parse_topic,
)

BTC = "kline.5.BTCUSDT"
ETH = "kline.5.ETHUSDT"
SOL = "kline.5.SOLUSDT"


def _ack(req_id: str | int, *, success: bool = True, ret_msg: str = "") -> Ack:
    """An ack as parse_frame produces it from Bybit's linear envelope."""
    frame = parse_frame(
        {
            "success": success,
            "ret_msg": ret_msg,
            "conn_id": "c1",
            "req_id": req_id,
            "op": "subscribe",
        }
    )
    assert isinstance(frame, Ack)
    return frame


def _handler_not_found(topic: str) -> Ack:
    return _ack(topic, success=False, ret_msg=f"error:handler not found,topic:{topic}")


@pytest.mark.parametrize(
    ("interval", "symbol", "topic"),
    [
        ("5", "BTCUSDT", "kline.5.BTCUSDT"),
        ("D", "ETHUSDT", "kline.D.ETHUSDT"),
        ("1", "1000PEPEUSDT", "kline.1.1000PEPEUSDT"),
    ],
)
def test_topic_round_trips_when_built_and_parsed(interval: str, symbol: str, topic: str) -> None:
    """kline_topic and parse_topic are inverses."""
    assert kline_topic(interval, symbol) == topic
    assert parse_topic(topic) == (interval, symbol)


@pytest.mark.parametrize(
    ("interval", "symbol"),
    [("7", "BTCUSDT"), ("5", "btcusdt"), ("5", ""), ("5", "BTC.USDT")],
)
def test_topic_is_refused_when_interval_or_symbol_is_invalid(interval: str, symbol: str) -> None:
    """Bybit would reject these only in an ack, so we refuse them at config time."""
    with pytest.raises(ConfigError):
        kline_topic(interval, symbol)


@pytest.mark.parametrize(
    "topic", ["kline.5", "kline..BTCUSDT", "kline.5.", "tickers.BTCUSDT", "orderbook.50.BTCUSDT"]
)
def test_parse_topic_fails_when_name_is_not_a_kline_topic(topic: str) -> None:
    """Anything but kline.{interval}.{symbol} is malformed."""
    with pytest.raises(DataError) as info:
        parse_topic(topic)
    assert info.value.reason == "malformed_topic"


def test_requests_carry_one_topic_each_when_built() -> None:
    """Every request names its own topic as req_id so each ack is attributable."""
    book = SubscriptionBook([BTC, ETH])
    assert book.requests() == [
        {"op": "subscribe", "req_id": BTC, "args": [BTC]},
        {"op": "subscribe", "req_id": ETH, "args": [ETH]},
    ]


@pytest.mark.parametrize(
    ("count", "per_frame", "sizes"),
    [(1, 10, [1]), (10, 10, [10]), (11, 10, [10, 1]), (25, 10, [10, 10, 5]), (5, 2, [2, 2, 1])],
)
def test_batches_hold_at_most_per_frame_requests_when_topics_are_many(
    count: int, per_frame: int, sizes: list[int]
) -> None:
    """Pending requests are grouped into batches no larger than per_frame, in order."""
    topics = [f"kline.5.SYM{i}USDT" for i in range(count)]
    batches = SubscriptionBook(topics, per_frame=per_frame).batches()
    assert [len(batch) for batch in batches] == sizes
    assert [request["req_id"] for batch in batches for request in batch] == topics


def test_requests_skip_confirmed_topics_when_some_acks_arrived() -> None:
    """Only topics not yet confirmed are requested again."""
    book = SubscriptionBook([BTC, ETH, SOL])
    assert book.on_ack(_ack(ETH)) is AckOutcome.CONFIRMED
    assert [request["req_id"] for request in book.requests()] == [BTC, SOL]
    assert not book.all_confirmed


def test_book_is_all_confirmed_when_every_topic_acked() -> None:
    """all_confirmed turns true with the last successful ack."""
    book = SubscriptionBook([BTC, ETH])
    book.on_ack(_ack(BTC))
    book.on_ack(_ack(ETH))
    assert book.all_confirmed
    assert book.requests() == []
    assert book.batches() == []


def test_already_subscribed_counts_as_confirmed_when_topic_was_live() -> None:
    """Bybit's "already subscribed" failure means the stream is flowing."""
    book = SubscriptionBook([BTC])
    outcome = book.on_ack(_ack(BTC, success=False, ret_msg=f"error:already subscribed,topic:{BTC}"))
    assert outcome is AckOutcome.CONFIRMED
    assert book.state(BTC) is TopicState.CONFIRMED
    assert book.rejected == {}


@pytest.mark.parametrize(
    "ack",
    [
        _ack(""),
        _ack("kline.5.DOGEUSDT"),
        _ack(7),
        Ack(op="unsubscribe", success=True, ret_msg="", req_id=BTC, conn_id="c1"),
    ],
)
def test_ack_changes_nothing_when_req_id_or_op_is_unknown(ack: Ack) -> None:
    """Acks that name none of our topics, or are not subscribe acks, are reported unknown."""
    book = SubscriptionBook([BTC])
    assert book.on_ack(ack) is AckOutcome.UNKNOWN
    assert book.state(BTC) is TopicState.PENDING


def test_rejection_is_recorded_when_ack_fails() -> None:
    """A failed ack marks the topic rejected with Bybit's message and stops requesting it."""
    book = SubscriptionBook([BTC, ETH])
    assert book.on_ack(_handler_not_found(ETH)) is AckOutcome.REJECTED
    assert book.state(ETH) is TopicState.REJECTED
    assert book.rejected == {ETH: f"error:handler not found,topic:{ETH}"}
    assert [request["req_id"] for request in book.requests()] == [BTC]


def test_startup_error_names_symbol_when_topic_never_worked() -> None:
    """A rejection on the first connection is a config error naming the symbol."""
    book = SubscriptionBook([BTC, ETH])
    book.on_ack(_ack(BTC))
    assert book.startup_error() is None
    book.on_ack(_handler_not_found(ETH))
    error = book.startup_error()
    assert isinstance(error, ConfigError)
    assert "ETHUSDT" in str(error)
    assert "handler not found" in str(error)
    assert error.key == "feed.symbols"


def test_rejected_topic_is_retried_when_it_worked_before_reconnect() -> None:
    """After a reconnect, a rejection of a once-confirmed topic is retryable, not config."""
    book = SubscriptionBook([BTC, ETH])
    book.on_ack(_ack(BTC))
    book.on_ack(_ack(ETH))
    book.reset_for_reconnect()
    book.on_ack(_ack(BTC))
    assert book.on_ack(_handler_not_found(ETH)) is AckOutcome.REJECTED
    assert book.startup_error() is None
    assert book.retry_rejected() == [ETH]
    assert book.state(ETH) is TopicState.PENDING
    assert book.rejected == {}
    assert [request["req_id"] for request in book.requests()] == [ETH]


def test_startup_error_persists_when_topic_never_worked_across_reconnects() -> None:
    """A topic dropped before its first ack is still a config fault if later rejected."""
    book = SubscriptionBook([BTC])
    book.reset_for_reconnect()
    book.on_ack(_handler_not_found(BTC))
    assert isinstance(book.startup_error(), ConfigError)


def test_every_topic_is_pending_when_reset_for_reconnect() -> None:
    """Subscriptions belong to the connection, so a reconnect re-requests everything."""
    book = SubscriptionBook([BTC, ETH, SOL])
    book.on_ack(_ack(BTC))
    book.on_ack(_handler_not_found(ETH))
    book.reset_for_reconnect()
    assert [book.state(topic) for topic in book.topics] == [TopicState.PENDING] * 3
    assert book.rejected == {}
    assert len(book.requests()) == 3


def test_duplicate_topics_are_requested_once_when_configured_twice() -> None:
    """Duplicates in the topic list collapse, keeping first-seen order."""
    book = SubscriptionBook([BTC, ETH, BTC])
    assert book.topics == (BTC, ETH)


@pytest.mark.parametrize(("topics", "per_frame"), [([], 10), ([BTC], 0)])
def test_construction_fails_when_arguments_are_invalid(topics: list[str], per_frame: int) -> None:
    """An empty topic list or a non-positive batch size is refused."""
    with pytest.raises(ConfigError):
        SubscriptionBook(topics, per_frame=per_frame)
