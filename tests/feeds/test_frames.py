"""Tests for trader.feeds.frames: Bybit v5 linear frames to typed objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from trader.errors import DataError
from trader.feeds.frames import Ack, KlineItem, KlinePush, Pong, parse_frame

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _sample(name: str) -> dict[str, Any]:
    samples = json.loads((FIXTURES / "bybit_v5_frames.json").read_text())
    frame: dict[str, Any] = samples["frames"][name]["frame"]
    return frame


def _kline(**item_changes: Any) -> dict[str, Any]:
    frame = copy.deepcopy(_sample("ws_kline_push_confirm_false"))
    frame["data"][0].update(item_changes)
    return frame


def test_documented_push_parses_when_confirm_is_false() -> None:
    """The docs' kline example becomes a KlinePush with one typed, unconfirmed item."""
    push = parse_frame(_sample("ws_kline_push_confirm_false"))

    assert push == KlinePush(
        topic="kline.5.BTCUSDT",
        symbol="BTCUSDT",
        interval="5",
        ts_ms=1672324988882,
        items=(
            KlineItem(
                start_ms=1672324800000,
                end_ms=1672325099999,
                interval="5",
                open=16649.5,
                high=16677.0,
                low=16608.0,
                close=16677.0,
                volume=2.081,
                turnover=34666.4005,
                confirm=False,
                timestamp_ms=1672324988882,
            ),
        ),
    )


def test_confirmed_push_parses_when_confirm_is_true() -> None:
    """The closing push carries confirm=True and the final values."""
    push = parse_frame(_sample("ws_kline_push_confirm_true"))

    assert isinstance(push, KlinePush)
    assert push.items[0].confirm is True
    assert push.items[0].close == 16681.5


def test_every_item_parses_when_data_holds_a_closing_and_an_opening_bar() -> None:
    """A push whose data[] holds the closing bar and the next one yields both items in order."""
    frame = _sample("ws_kline_push_confirm_true")
    opening = dict(
        frame["data"][0],
        start=1672325100000,
        end=1672325399999,
        open="16681.5",
        high="16681.5",
        low="16681.5",
        close="16681.5",
        volume="0.01",
        turnover="166.815",
        confirm=False,
        timestamp=1672325100005,
    )
    frame["data"].append(opening)

    push = parse_frame(frame)

    assert isinstance(push, KlinePush)
    assert [(item.start_ms, item.confirm) for item in push.items] == [
        (1672324800000, True),
        (1672325100000, False),
    ]


def test_push_parses_when_key_order_differs_and_input_is_bytes() -> None:
    """Fields are read by name, so reversed key order in raw bytes gives the same push."""
    frame = _sample("ws_kline_push_confirm_false")
    reordered = dict(reversed(list(frame.items())))
    reordered["data"] = [dict(reversed(list(frame["data"][0].items())))]

    assert parse_frame(orjson.dumps(reordered)) == parse_frame(frame)


def test_ack_parses_when_subscription_succeeds() -> None:
    """The documented linear subscribe ack becomes an Ack with the empty req_id echoed."""
    ack = parse_frame(json.dumps(_sample("ws_subscribe_ack_linear")))

    assert ack == Ack(
        op="subscribe",
        success=True,
        ret_msg="",
        req_id="",
        conn_id="3cd84cb1-4d06-4a05-930a-2efe5fc70f0f",
    )


@pytest.mark.parametrize(
    "name", ["ws_subscribe_rejected_unknown_topic_or_symbol", "ws_subscribe_duplicate"]
)
def test_failed_ack_parses_when_subscription_is_refused(name: str) -> None:
    """A refused subscription is an Ack with success False and the server's message."""
    ack = parse_frame(_sample(name))

    assert isinstance(ack, Ack)
    assert ack.success is False
    assert ack.ret_msg.startswith("error:")


def test_ack_keeps_integer_req_id_when_client_sent_one() -> None:
    """ccxt sends integer req_ids; the ack echoes them unchanged."""
    ack = parse_frame(
        {"success": True, "ret_msg": "", "conn_id": "c", "req_id": 7, "op": "subscribe"}
    )

    assert isinstance(ack, Ack)
    assert ack.req_id == 7


def test_pong_parses_when_linear_reply_has_op_ping() -> None:
    """The linear pong (op "ping", ret_msg "pong") is a Pong."""
    assert parse_frame(_sample("ws_pong_linear")) == Pong(req_id="")


def test_pong_parses_when_op_is_pong() -> None:
    """The private/option pong shape (op "pong") is a Pong too."""
    assert parse_frame({"op": "pong", "args": ["1672324988882"], "req_id": "9"}) == Pong(req_id="9")


@pytest.mark.parametrize("raw", ["not json", b'{"topic": ', "", "[1, 2]", "42", '"text"'])
def test_unparseable_frame_raised_when_input_is_not_a_json_object(raw: str | bytes) -> None:
    """Text that is not JSON, or JSON that is not an object, is unparseable_frame."""
    with pytest.raises(DataError) as caught:
        parse_frame(raw)

    assert caught.value.reason == "unparseable_frame"


@pytest.mark.parametrize(
    "frame",
    [
        {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1, "data": {}},
        {"topic": 5},
        {"hello": "world"},
        {"op": "subscribe"},
    ],
)
def test_unknown_frame_raised_when_object_is_no_kline_ack_or_pong(frame: dict[str, Any]) -> None:
    """Other topics and shapeless objects are unknown_frame."""
    with pytest.raises(DataError) as caught:
        parse_frame(frame)

    assert caught.value.reason == "unknown_frame"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"start": "1672324800000"}, "start as a string"),
        ({"start": True}, "start as a boolean"),
        ({"end": 1672325099999.0}, "end as a float"),
        ({"timestamp": None}, "timestamp null"),
        ({"open": 16649.5}, "price as a number"),
        ({"volume": "two"}, "volume not a decimal"),
        ({"confirm": "true"}, "confirm as a string"),
        ({"confirm": 1}, "confirm as a number"),
        ({"interval": 5}, "interval as a number"),
    ],
)
def test_malformed_kline_raised_when_item_field_has_wrong_type(
    change: dict[str, Any], why: str
) -> None:
    """Each wrong-typed item field is malformed_kline."""
    with pytest.raises(DataError) as caught:
        parse_frame(_kline(**change))

    assert caught.value.reason == "malformed_kline", why


@pytest.mark.parametrize("field", ["start", "end", "open", "turnover", "confirm", "timestamp"])
def test_malformed_kline_raised_when_item_field_is_missing(field: str) -> None:
    """Each missing item field is malformed_kline, naming the field."""
    frame = _kline()
    del frame["data"][0][field]

    with pytest.raises(DataError) as caught:
        parse_frame(frame)

    assert caught.value.reason == "malformed_kline"
    assert field in caught.value.detail


@pytest.mark.parametrize(
    "change",
    [
        {"topic": "kline.5"},
        {"topic": "kline..BTCUSDT"},
        {"type": "delta"},
        {"ts": "1672324988882"},
        {"data": []},
        {"data": {"start": 1}},
        {"data": ["x"]},
    ],
)
def test_malformed_kline_raised_when_envelope_is_wrong(change: dict[str, Any]) -> None:
    """A bad topic, type, ts or data array is malformed_kline."""
    frame = dict(_kline(), **change)

    with pytest.raises(DataError) as caught:
        parse_frame(frame)

    assert caught.value.reason == "malformed_kline"
