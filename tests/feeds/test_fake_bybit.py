"""Tests of `FakeBybit` over real loopback sockets: protocol, pushes, faults and REST semantics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from trader.domain import Bar

_FIXTURES = Path(__file__).parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:300]
_ETH = load_candles(_FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:300]
_HISTORY = 250  # bars already closed when the fake starts
_STEP_S = 5.0  # bounds a failing await only; passing tests never get near it
_TOPIC = "kline.5.BTCUSDT"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    """A running fake with 250 closed bars per symbol and bar 250 forming."""
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as running:
        yield running


@pytest.fixture
async def ws(fake: FakeBybit) -> AsyncIterator[ClientConnection]:
    """A websockets client connected to the fake."""
    async with connect(fake.ws_url) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session


async def _recv(ws: ClientConnection) -> Any:
    async with asyncio.timeout(_STEP_S):
        return json.loads(await ws.recv())


async def _request(ws: ClientConnection, message: dict[str, Any]) -> Any:
    await ws.send(json.dumps(message))
    return await _recv(ws)


async def _subscribe(ws: ClientConnection, *topics: str) -> None:
    ack = await _request(ws, {"op": "subscribe", "args": list(topics)})
    assert ack["success"] is True


async def _kline(session: aiohttp.ClientSession, fake: FakeBybit, **params: str) -> Any:
    async with session.get(f"{fake.rest_url}/v5/market/kline", params=params) as response:
        assert response.status == 200
        return await response.json()


def _row(bar: Bar) -> list[float]:
    return [bar.start_ms, bar.open, bar.high, bar.low, bar.close, bar.volume]


# --- websocket protocol ---------------------------------------------------------------------


@pytest.mark.parametrize(("req_id", "echoed"), [("sub-1", "sub-1"), (7, 7), (None, "")])
async def test_ack_echoes_req_id_when_subscribing_to_a_served_topic(
    ws: ClientConnection, req_id: object, echoed: object
) -> None:
    """A good subscribe gets one success ack carrying the req_id, or "" when none was sent."""
    message: dict[str, Any] = {"op": "subscribe", "args": [_TOPIC, "kline.5.ETHUSDT"]}
    if req_id is not None:
        message["req_id"] = req_id
    ack = await _request(ws, message)
    assert ack == {
        "success": True,
        "ret_msg": "",
        "conn_id": ack["conn_id"],
        "req_id": echoed,
        "op": "subscribe",
    }
    assert isinstance(ack["conn_id"], str)


@pytest.mark.parametrize(
    "topic", ["kline.5.NOPEUSDT", "kline.5.btcusdt", "kline.1.BTCUSDT", "orderbook.50.BTCUSDT"]
)
async def test_ack_reports_handler_not_found_when_topic_or_symbol_is_unknown(
    ws: ClientConnection, topic: str
) -> None:
    """Unknown topics and lower-case symbols fail the ack, and the socket stays usable."""
    ack = await _request(ws, {"op": "subscribe", "req_id": "e1", "args": [topic]})
    assert ack["success"] is False
    assert ack["ret_msg"] == f"error:handler not found,topic:{topic}"
    assert (await _request(ws, {"op": "ping"}))["ret_msg"] == "pong"


async def test_ack_reports_already_subscribed_when_topic_repeats(ws: ClientConnection) -> None:
    """A second subscribe to an active topic fails with the already-subscribed text."""
    await _subscribe(ws, _TOPIC)
    ack = await _request(ws, {"op": "subscribe", "req_id": "again", "args": [_TOPIC]})
    assert (ack["success"], ack["ret_msg"], ack["req_id"]) == (
        False,
        f"error:already subscribed,topic:{_TOPIC}",
        "again",
    )


@pytest.mark.parametrize("op", ["pong", "subscribez"])
async def test_ack_reports_invalid_op_when_op_is_unknown(ws: ClientConnection, op: str) -> None:
    """An unknown op (including a client "pong") gets error:invalid op and the socket stays open."""
    ack = await _request(ws, {"op": op, "req_id": "x"})
    assert (ack["success"], ack["ret_msg"]) == (False, "error:invalid op")
    await _subscribe(ws, _TOPIC)


async def test_ack_reports_decode_failure_when_frame_is_not_json(ws: ClientConnection) -> None:
    """Non-JSON text gets a Failed-to-decode failure and the socket stays open."""
    await ws.send("hello?")
    ack = await _recv(ws)
    assert ack["success"] is False
    assert ack["ret_msg"].startswith("Failed to decode incoming data:")
    await _subscribe(ws, _TOPIC)


@pytest.mark.parametrize(("req_id", "echoed"), [("p1", "p1"), (None, "")])
async def test_pong_echoes_req_id_when_client_pings(
    ws: ClientConnection, fake: FakeBybit, req_id: str | None, echoed: str
) -> None:
    """A JSON ping gets the linear pong (op "ping", ret_msg "pong") and is recorded."""
    message = {"op": "ping"} if req_id is None else {"op": "ping", "req_id": req_id}
    pong = await _request(ws, message)
    assert pong == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": pong["conn_id"],
        "req_id": echoed,
        "op": "ping",
    }
    assert len(fake.ws.requests) == 1
    assert fake.ws.requests[0].op == "ping"


async def test_unsubscribe_acks_and_stops_pushes_when_topic_was_subscribed(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """After an acked unsubscribe only the remaining topic's pushes arrive."""
    await _subscribe(ws, _TOPIC, "kline.5.ETHUSDT")
    ack = await _request(ws, {"op": "unsubscribe", "req_id": "u", "args": [_TOPIC]})
    assert (ack["success"], ack["op"], ack["req_id"]) == (True, "unsubscribe", "u")
    await fake.advance_bars(1)
    topics = {(await _recv(ws))["topic"] for _ in range(3)}
    assert topics == {"kline.5.ETHUSDT"}


# --- pushes over the virtual clock ----------------------------------------------------------


async def test_pushes_updates_then_one_confirm_when_bars_advance(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """Each bar gets updates_per_bar confirm=false pushes then one exact confirm=true push."""
    await _subscribe(ws, _TOPIC)
    await fake.advance_bars(2)
    frames = [await _recv(ws) for _ in range(6)]
    confirms = [frame["data"][0]["confirm"] for frame in frames]
    assert confirms == [False, False, True, False, False, True]
    first = frames[2]
    bar = _BTC[_HISTORY]
    assert first["topic"] == _TOPIC
    assert first["type"] == "snapshot"
    assert first["ts"] == bar.close_ms + 12
    item = first["data"][0]
    assert (item["start"], item["end"], item["interval"]) == (bar.start_ms, bar.end_ms, "5")
    assert [float(item[key]) for key in ("open", "high", "low", "close", "volume")] == [
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
    ]
    assert all(isinstance(item[key], str) for key in ("open", "close", "volume", "turnover"))
    assert all(isinstance(item[key], int) for key in ("start", "end", "timestamp"))
    update = frames[0]["data"][0]
    assert update["start"] == bar.start_ms
    assert float(update["low"]) >= bar.low
    assert float(update["high"]) <= bar.high
    assert fake.now_ms == _BTC[_HISTORY + 2].start_ms + 12


async def test_confirm_shares_data_with_next_bar_when_share_data_is_set(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """With share_data the confirm push also carries the next bar's first confirm=false update."""
    await _subscribe(ws, _TOPIC)
    await fake.advance_bars(1, share_data=True)
    frames = [await _recv(ws) for _ in range(3)]
    data = frames[2]["data"]
    assert [(item["start"], item["confirm"]) for item in data] == [
        (_BTC[_HISTORY].start_ms, True),
        (_BTC[_HISTORY + 1].start_ms, False),
    ]


# --- faults ---------------------------------------------------------------------------------


async def test_client_sees_close_frame_when_server_closes_connections(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """close_connections sends a real close frame with the given code and reason."""
    await fake.close_connections(1001, "maintenance")
    with pytest.raises(ConnectionClosed) as raised:
        await _recv(ws)
    assert raised.value.rcvd is not None
    assert (raised.value.rcvd.code, raised.value.rcvd.reason) == (1001, "maintenance")


async def test_client_sees_1006_and_resubscribes_when_server_aborts_connections(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """abort_connections drops TCP with no close frame; a reconnect's resubscribe is recorded."""
    await _subscribe(ws, _TOPIC)
    fake.abort_connections()
    with pytest.raises(ConnectionClosed) as raised:
        await _recv(ws)
    assert raised.value.rcvd is None
    assert ws.close_code == 1006
    async with connect(fake.ws_url) as again:
        await _subscribe(again, _TOPIC)
    subscribes = await fake.ws.wait_for_requests("subscribe", 2)
    assert [request.args for request in subscribes] == [(_TOPIC,), (_TOPIC,)]
    assert subscribes[0].conn_id != subscribes[1].conn_id
    assert fake.ws.connections_opened == 2


async def test_only_rest_has_the_bars_when_pushes_are_paused(
    ws: ClientConnection, fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """Paused pushes skip whole bars while the clock moves, and REST serves the gap."""
    await _subscribe(ws, _TOPIC)
    fake.pause_pushes()
    await fake.advance_bars(2)
    fake.resume_pushes()
    await fake.advance_bars(1)
    first = await _recv(ws)
    assert first["data"][0]["start"] == _BTC[_HISTORY + 2].start_ms
    body = await _kline(http, fake, symbol="BTCUSDT", interval="5", limit="3")
    starts = [int(row[0]) for row in body["result"]["list"]]
    assert starts == [bar.start_ms for bar in _BTC[_HISTORY + 3 : _HISTORY : -1]]


async def test_confirm_is_missing_when_next_confirm_is_dropped(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """drop_next_confirm removes exactly one confirm push for the symbol."""
    await _subscribe(ws, _TOPIC)
    fake.drop_next_confirm("BTCUSDT")
    await fake.advance_bars(2)
    frames = [await _recv(ws) for _ in range(5)]
    assert [(f["data"][0]["start"], f["data"][0]["confirm"]) for f in frames[1:4]] == [
        (_BTC[_HISTORY].start_ms, False),
        (_BTC[_HISTORY + 1].start_ms, False),
        (_BTC[_HISTORY + 1].start_ms, False),
    ]
    assert frames[4]["data"][0]["confirm"] is True


async def test_confirm_arrives_twice_when_next_confirm_is_duplicated(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """duplicate_next_confirm sends the same confirm push twice, once."""
    await _subscribe(ws, _TOPIC)
    fake.duplicate_next_confirm("BTCUSDT")
    await fake.advance_bars(2)
    frames = [await _recv(ws) for _ in range(7)]
    expected = [False, False, True, True, False, False, True]
    assert [f["data"][0]["confirm"] for f in frames] == expected
    assert frames[2] == frames[3]


async def test_older_confirm_arrives_when_old_confirm_is_pushed(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """push_old_confirm sends a confirm for an already closed, older bar after newer frames."""
    await _subscribe(ws, _TOPIC)
    await fake.push_old_confirm("BTCUSDT", bars_back=3)
    item = (await _recv(ws))["data"][0]
    assert (item["start"], item["confirm"]) == (_BTC[_HISTORY - 3].start_ms, True)
    assert float(item["close"]) == _BTC[_HISTORY - 3].close


async def test_client_gets_bad_frames_when_malformed_pushes_are_sent(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """push_text delivers non-JSON text and push_nan_kline a kline whose close is "NaN"."""
    await _subscribe(ws, _TOPIC)
    assert await fake.push_text() == 1
    async with asyncio.timeout(_STEP_S):
        text = await ws.recv()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    await fake.push_nan_kline("BTCUSDT")
    assert (await _recv(ws))["data"][0]["close"] == "NaN"


async def test_subscription_fails_once_when_next_subscribe_is_rejected(
    ws: ClientConnection, fake: FakeBybit
) -> None:
    """reject_next_subscribe fails one subscribe to the topic; the retry succeeds."""
    fake.reject_next_subscribe(_TOPIC)
    ack = await _request(ws, {"op": "subscribe", "args": [_TOPIC]})
    assert (ack["success"], ack["ret_msg"]) == (False, f"error:handler not found,topic:{_TOPIC}")
    await _subscribe(ws, _TOPIC)


async def test_no_pong_when_pongs_are_stalled(ws: ClientConnection, fake: FakeBybit) -> None:
    """A stalled fake records the ping but answers nothing; the next frame is a later ack."""
    fake.stall_pongs()
    await ws.send(json.dumps({"op": "ping", "req_id": "p"}))
    pings = await fake.ws.wait_for_requests("ping", 1)
    assert pings[0].req_id == "p"
    ack = await _request(ws, {"op": "subscribe", "req_id": "s", "args": [_TOPIC]})
    assert (ack["op"], ack["req_id"]) == ("subscribe", "s")


# --- REST -----------------------------------------------------------------------------------


async def test_kline_lists_newest_first_with_forming_candle_when_range_reaches_now(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """Rows are all strings, newest first, the forming candle first; the query is recorded."""
    await fake.advance_bars(1)
    body = await _kline(http, fake, interval="5", limit="3", symbol="BTCUSDT")
    assert (body["retCode"], body["retMsg"], body["time"]) == (0, "OK", fake.now_ms)
    rows = body["result"]["list"]
    assert all(isinstance(value, str) for row in rows for value in row)
    assert [int(row[0]) for row in rows] == [
        b.start_ms for b in _BTC[_HISTORY + 1 : _HISTORY - 2 : -1]
    ]
    forming = _BTC[_HISTORY + 1]
    assert float(rows[0][1]) == float(rows[0][4]) == forming.open  # no trades yet: o = c
    assert [float(value) for value in rows[1][:6]] == _row(_BTC[_HISTORY])
    assert fake.rest_queries[-1].params == {"interval": "5", "limit": "3", "symbol": "BTCUSDT"}


async def test_kline_returns_newest_limit_when_start_and_end_match_more(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """start and end are inclusive, and when more match the newest `limit` come back."""
    start, end = str(_BTC[10].start_ms), str(_BTC[20].start_ms)
    every = await _kline(http, fake, symbol="BTCUSDT", interval="5", start=start, end=end)
    assert len(every["result"]["list"]) == 11
    newest = await _kline(
        http, fake, symbol="BTCUSDT", interval="5", start=start, end=end, limit="2"
    )
    assert [int(row[0]) for row in newest["result"]["list"]] == [
        _BTC[20].start_ms,
        _BTC[19].start_ms,
    ]


async def test_kline_anchors_at_containing_candle_when_only_start_is_given(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """A mid-bar start alone returns `limit` candles from the one containing it, newest first."""
    mid_bar = str(_BTC[10].start_ms + 1234)
    body = await _kline(http, fake, symbol="BTCUSDT", interval="5", start=mid_bar, limit="3")
    assert [int(row[0]) for row in body["result"]["list"]] == [
        bar.start_ms for bar in _BTC[12:9:-1]
    ]


async def test_kline_default_limit_is_200_when_limit_is_absent(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """Without limit the newest 200 candles come back."""
    body = await _kline(http, fake, symbol="BTCUSDT", interval="5")
    assert len(body["result"]["list"]) == 200


async def test_kline_returns_empty_list_when_range_has_no_data(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """A range before the data (or in the future) is retCode 0 with an empty list."""
    early = str(_BTC[0].start_ms - 10_000_000)
    body = await _kline(http, fake, symbol="BTCUSDT", interval="5", start="0", end=early)
    assert (body["retCode"], body["result"]["list"]) == (0, [])
    future = str(_BTC[-1].start_ms)
    body = await _kline(http, fake, symbol="BTCUSDT", interval="5", start=future)
    assert (body["retCode"], body["result"]["list"]) == (0, [])


@pytest.mark.parametrize(
    ("symbol", "interval", "message"),
    [
        ("btcusdt", "5", "params error: symbol invalid"),
        ("NOPEUSDT", "5", "params error: symbol invalid"),
        ("BTCUSDT", "7", "Invalid period!"),
    ],
)
async def test_kline_returns_10001_when_symbol_or_interval_is_bad(
    fake: FakeBybit, http: aiohttp.ClientSession, symbol: str, interval: str, message: str
) -> None:
    """A bad symbol or interval is HTTP 200 with retCode 10001."""
    body = await _kline(http, fake, symbol=symbol, interval=interval)
    assert (body["retCode"], body["retMsg"]) == (10001, message)


async def test_kline_returns_10006_when_next_klines_are_rate_limited(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """rate_limit_next_klines(2) answers two calls with 10006 on HTTP 200, then serves again."""
    fake.rate_limit_next_klines(2)
    codes = [(await _kline(http, fake, symbol="BTCUSDT", interval="5"))["retCode"] for _ in "abc"]
    assert codes == [10006, 10006, 0]


async def test_rest_answers_plain_text_403_when_next_calls_are_forbidden(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """forbid_next_calls(1) answers one call of any route with a non-JSON 403."""
    fake.forbid_next_calls(1)
    async with http.get(f"{fake.rest_url}/v5/market/time") as response:
        assert response.status == 403
        assert response.content_type == "text/plain"
        assert "Forbidden" in await response.text()
    async with http.get(f"{fake.rest_url}/v5/market/time") as response:
        assert response.status == 200


@pytest.mark.parametrize("ret_code", [10016, 10000])
async def test_rest_answers_server_fault_on_http_200_when_next_calls_fail(
    fake: FakeBybit, ret_code: int
) -> None:
    """fail_next_calls(1) answers one call of any route with the retCode on HTTP 200.

    Plain ccxt maps it to an ExchangeError that is not a NetworkError, as it does for Bybit's.
    """
    fake.fail_next_calls(1, ret_code=ret_code)
    exchange = ccxt_async.bybit()
    exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = fake.rest_url
    try:
        with pytest.raises(ccxt_async.ExchangeError) as info:
            await exchange.public_get_v5_market_time()
        second = await exchange.public_get_v5_market_time()
    finally:
        await exchange.close()
    assert not isinstance(info.value, ccxt_async.NetworkError)
    assert f'"retCode": {ret_code}' in str(info.value)
    assert second["retCode"] == 0
    assert [query.path for query in fake.rest_queries] == ["/v5/market/time"] * 2


async def test_time_reports_exchange_clock_when_bars_advance(
    fake: FakeBybit, http: aiohttp.ClientSession
) -> None:
    """/v5/market/time follows the virtual clock in Bybit's string fields."""
    await fake.advance_bars(3)
    async with http.get(f"{fake.rest_url}/v5/market/time") as response:
        body = await response.json()
    now_ms = _BTC[_HISTORY + 3].start_ms + 12
    assert body == {
        "retCode": 0,
        "retMsg": "OK",
        "result": {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)},
        "retExtInfo": {},
        "time": now_ms,
    }


@pytest.mark.parametrize(
    ("status", "expected"), [(None, ["BTCUSDT", "ETHUSDT"]), ("PreLaunch", [])]
)
async def test_instruments_list_served_symbols_when_category_is_linear(
    fake: FakeBybit, http: aiohttp.ClientSession, status: str | None, expected: list[str]
) -> None:
    """instruments-info lists each served symbol with string filters; PreLaunch is empty."""
    params = {"category": "linear", "limit": "1000"} | (
        {} if status is None else {"status": status}
    )
    url = f"{fake.rest_url}/v5/market/instruments-info"
    async with http.get(url, params=params) as response:
        body = await response.json()
    result = body["result"]
    assert (result["category"], result["nextPageCursor"]) == ("linear", "")
    assert [row["symbol"] for row in result["list"]] == expected
    for row in result["list"]:
        assert row["priceFilter"]["tickSize"] == "0.10"
        assert row["lotSizeFilter"]["qtyStep"] == "0.001"


async def test_ccxt_fetch_ohlcv_returns_real_candles_when_pointed_at_the_fake(
    fake: FakeBybit,
) -> None:
    """ccxt's bybit loads linear markets from the fake and fetch_ohlcv gives back the candles."""
    exchange = ccxt_async.bybit({"options": {"fetchMarkets": {"types": ["linear"]}}})
    exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = fake.rest_url
    try:
        since = await exchange.fetch_ohlcv("BTC/USDT:USDT", "5m", since=_BTC[10].start_ms, limit=5)
        latest = await exchange.fetch_ohlcv("ETH/USDT:USDT", "5m", limit=4)
    finally:
        await exchange.close()
    assert since == [_row(bar) for bar in _BTC[10:15]]
    assert latest[:3] == [_row(bar) for bar in _ETH[_HISTORY - 3 : _HISTORY]]
    assert latest[3][0] == _ETH[_HISTORY].start_ms
    kline_calls = [query for query in fake.rest_queries if query.path == "/v5/market/kline"]
    assert kline_calls[0].params["category"] == "linear"
