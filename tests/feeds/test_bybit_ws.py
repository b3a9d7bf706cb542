"""Tests of `BybitKlineFeed` against `FakeBybit` over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from trader.errors import ConfigError
from trader.feeds.backoff import Backoff
from trader.feeds.bybit_ws import (
    BybitKlineFeed,
    ConfirmedBar,
    FeedEvent,
    FeedReconnected,
    FeedState,
)
from trader.replay.rejections import RejectionCounter

_FIXTURES = Path(__file__).parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:300]
_ETH = load_candles(_FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")[:300]
_HISTORY = 250  # bars already closed when the fake starts
_STEP_S = 5.0  # bounds a failing await only; passing tests never get near it
_SEED = 7
_BTC_TOPIC = "kline.5.BTCUSDT"
_ETH_TOPIC = "kline.5.ETHUSDT"


class _RecordingSleep:
    """The injected backoff sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)  # yield only, as a real sleep would; not a synchronisation


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    """A running fake with 250 closed bars per symbol and bar 250 forming."""
    async with FakeBybit(_BTC + _ETH, start_ms=_BTC[_HISTORY].start_ms) as running:
        yield running


@pytest.fixture
def sleep() -> _RecordingSleep:
    """The recording backoff sleep."""
    return _RecordingSleep()


@pytest.fixture
def make_feed(fake: FakeBybit, sleep: _RecordingSleep) -> Callable[..., BybitKlineFeed]:
    """Build a feed on the fake with test-sized intervals; keywords override them."""

    def build(**overrides: Any) -> BybitKlineFeed:
        options: dict[str, Any] = {
            "ws_url": fake.ws_url,
            "symbols": ["BTCUSDT", "ETHUSDT"],
            "interval": "5",
            "ping_interval_s": 0.05,
            "ping_timeout_s": 2.0,
            "staleness_s": 60.0,
            "backoff": Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(_SEED)),
            "rejections": RejectionCounter(quiet=True),
            "queue_maxsize": 16,
            "sleep": sleep,
        }
        options.update(overrides)
        return BybitKlineFeed(**options)

    return build


async def _next(feed: BybitKlineFeed) -> FeedEvent:
    async with asyncio.timeout(_STEP_S):
        return await anext(feed)


async def _bars(feed: BybitKlineFeed, count: int) -> list[ConfirmedBar]:
    events = [await _next(feed) for _ in range(count)]
    assert all(isinstance(event, ConfirmedBar) for event in events), events
    return [event for event in events if isinstance(event, ConfirmedBar)]


async def _reconnected(feed: BybitKlineFeed) -> FeedReconnected:
    event = await _next(feed)
    assert isinstance(event, FeedReconnected), event
    return event


class _HandshakeDropper:
    """A loopback TCP proxy in front of the fake that can drop connections mid-handshake.

    While `drops` is positive, each new connection has its upgrade request read and is then
    closed without a reply (what a restarting exchange or load balancer does); every other
    connection is piped to the fake unchanged.
    """

    def __init__(self, upstream_url: str) -> None:
        self._upstream = upstream_url.removeprefix("ws://").partition("/")[0].rpartition(":")
        self._server: asyncio.Server | None = None
        self.drops = 0
        self.dropped = 0
        self.url = ""

    async def __aenter__(self) -> _HandshakeDropper:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v5/public/linear"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drops > 0:
            self.drops -= 1
            await reader.readuntil(b"\r\n\r\n")
            self.dropped += 1
            writer.close()
            return
        host, _, port = self._upstream
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until either side ends; then close the writing side."""
    try:
        # An abort on either side ends the copy; closing below then ends the other direction.
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
    finally:
        writer.close()


def _feed_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("feed.bybit")]


async def test_bars_arrive_once_in_order_when_two_symbols_stream(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """Each confirmed bar of both symbols is delivered once, in start order, with its recv time."""
    async with make_feed(wall_ms=lambda: 123) as feed:
        assert feed.state is FeedState.STREAMING
        await fake.advance_bars(3)
        events = await _bars(feed, 6)
    for symbol, final in (("BTCUSDT", _BTC), ("ETHUSDT", _ETH)):
        got = [event.bar for event in events if event.bar.symbol == symbol]
        assert [bar.start_ms for bar in got] == [b.start_ms for b in final[_HISTORY:253]]
        assert [bar.close for bar in got] == [b.close for b in final[_HISTORY:253]]
    assert {event.recv_ms for event in events} == {123}
    assert feed.state is FeedState.CLOSED


async def test_unconfirmed_update_moves_only_last_price_when_it_shares_a_push(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """An unconfirmed item after a confirm moves last_price and yields no event."""
    async with make_feed() as feed:
        await fake.advance_bars(1, share_data=True)
        btc, eth = await _bars(feed, 2)
        forming = fake.market.forming_bar("BTCUSDT")
        assert forming is not None
        # ETH's push follows BTC's on the one stream, so BTC's whole push is processed by now.
        assert (btc.bar.symbol, eth.bar.symbol) == ("BTCUSDT", "ETHUSDT")
        assert btc.bar.start_ms == _BTC[_HISTORY].start_ms
        assert feed.last_price("BTCUSDT") == forming.close
        assert feed.exchange_time_ms == fake.now_ms
        await fake.advance_bars(1)
        next_btc, _ = await _bars(feed, 2)
    assert next_btc.bar.start_ms == _BTC[_HISTORY + 1].start_ms


async def test_pings_go_out_at_the_interval_when_the_clock_advances(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """A JSON ping goes out each time the injected clock passes ping_interval_s, not before."""
    now = [100.0]
    async with make_feed(ping_interval_s=10.0, clock=lambda: now[0]) as feed:
        now[0] += 10.0
        first = await asyncio.wait_for(fake.ws.wait_for_requests("ping", 1), _STEP_S)
        assert feed.pings_sent == 1
        now[0] += 10.0
        pings = await asyncio.wait_for(fake.ws.wait_for_requests("ping", 2), _STEP_S)
        assert feed.pings_sent == 2
    assert [p.req_id for p in pings] == [first[0].req_id, str(int(first[0].req_id) + 1)]
    assert all(p.args == () for p in pings)


async def test_reconnects_and_resubscribes_when_pongs_stall(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """A ping left unanswered past ping_timeout_s forces a reconnect and a resubscribe."""
    async with make_feed(ping_timeout_s=0.1) as feed:
        fake.stall_pongs()
        await asyncio.wait_for(fake.ws.wait_for_connections(2), _STEP_S)
        fake.stall_pongs(False)
        event = await _reconnected(feed)
        assert feed.reconnects >= 1
    assert event.last_starts == {}
    subscribes = fake.ws_requests
    conns = {r.conn_id for r in subscribes if r.op == "subscribe"}
    assert len(conns) >= 2


@pytest.mark.parametrize("fault", ["close", "abort"])
async def test_reconnects_and_resubscribes_when_server_drops_connection(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed], fault: str
) -> None:
    """Both a clean close and an abort lead to a resubscribe, a FeedReconnected and more bars."""
    async with make_feed() as feed:
        await fake.advance_bars(1)
        await _bars(feed, 2)
        if fault == "close":
            await fake.close_connections()
        else:
            fake.abort_connections()
        event = await _reconnected(feed)
        assert event.last_starts == {
            "BTCUSDT": _BTC[_HISTORY].start_ms,
            "ETHUSDT": _ETH[_HISTORY].start_ms,
        }
        await fake.advance_bars(1)
        bars = await _bars(feed, 2)
        assert feed.reconnects == 1
    subscribes = await fake.ws.wait_for_requests("subscribe", 4)
    assert sorted(r.args[0] for r in subscribes[2:]) == [_BTC_TOPIC, _ETH_TOPIC]
    assert [e.bar.start_ms for e in bars] == [_BTC[_HISTORY + 1].start_ms] * 2


async def test_reconnects_when_a_topic_goes_stale(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """A topic silent past staleness_s forces a reconnect."""
    async with make_feed(staleness_s=0.1) as feed:
        await _reconnected(feed)
    assert fake.ws.connections_opened >= 2


async def test_backoff_delays_come_from_the_injected_backoff_when_reconnecting(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed], sleep: _RecordingSleep
) -> None:
    """The reconnect waits are the injected Backoff's draws, and it is reset after resubscribing."""
    backoff = Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(_SEED))
    twin = Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(_SEED))
    async with make_feed(backoff=backoff) as feed:
        await fake.close_connections()
        await _reconnected(feed)
        assert backoff.attempts == 0
        fake.abort_connections()
        await _reconnected(feed)
    first = twin.next_delay_s()
    twin.reset()
    assert sleep.delays == [first, twin.next_delay_s()]


async def test_duplicate_and_old_confirms_are_dropped_and_counted_when_pushed(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """A repeated confirm and an out-of-order confirm are counted, never delivered."""
    rejections = RejectionCounter(quiet=True)
    async with make_feed(rejections=rejections) as feed:
        fake.duplicate_next_confirm("BTCUSDT")
        await fake.advance_bars(1)
        await fake.push_old_confirm("BTCUSDT", bars_back=3)
        await fake.advance_bars(1)
        bars = await _bars(feed, 4)
    starts = [e.bar.start_ms for e in bars if e.bar.symbol == "BTCUSDT"]
    assert starts == [_BTC[_HISTORY].start_ms, _BTC[_HISTORY + 1].start_ms]
    assert rejections.as_dict() == {"duplicate": 1, "out_of_order": 1}


async def test_feed_keeps_streaming_when_frames_are_malformed(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """Non-JSON text and a NaN kline are counted and dropped, and bars keep coming."""
    rejections = RejectionCounter(quiet=True)
    frames: list[str] = []
    on_frame = lambda _ms, text: frames.append(text)  # noqa: E731
    async with make_feed(rejections=rejections, on_frame=on_frame) as feed:
        await fake.push_text("not json")
        await fake.push_nan_kline("BTCUSDT")
        await fake.advance_bars(1)
        bars = await _bars(feed, 2)
        assert feed.state is FeedState.STREAMING
    assert [e.bar.symbol for e in bars] == ["BTCUSDT", "ETHUSDT"]
    assert rejections.total == 2
    assert rejections.as_dict()["unparseable_frame"] == 1
    assert "not json" in frames  # the recorder hook sees every frame, bad ones too


async def test_enter_raises_config_error_naming_symbol_when_subscription_is_rejected(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """A topic rejected on the first connection fails the entry with a ConfigError."""
    fake.reject_next_subscribe(_ETH_TOPIC)
    feed = make_feed()
    with pytest.raises(ConfigError, match="ETHUSDT"):
        async with asyncio.timeout(_STEP_S):
            await feed.__aenter__()
    assert feed.state is FeedState.CLOSED
    assert _feed_tasks() == []


async def test_rejected_subscription_is_retried_when_it_follows_a_reconnect(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed], sleep: _RecordingSleep
) -> None:
    """A topic that worked before and is rejected after a reconnect is subscribed again."""
    async with make_feed() as feed:
        fake.reject_next_subscribe(_ETH_TOPIC)
        await fake.close_connections()
        await _reconnected(feed)
        await fake.advance_bars(1)
        bars = await _bars(feed, 2)
    eth = [r for r in fake.ws_requests if r.op == "subscribe" and r.args == (_ETH_TOPIC,)]
    assert len(eth) == 3  # start-up, rejected after the reconnect, retried
    assert len(sleep.delays) == 2  # the reconnect, then the retry
    assert {e.bar.symbol for e in bars} == {"BTCUSDT", "ETHUSDT"}


async def test_no_task_is_left_when_the_feed_exits(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """__aexit__ cancels and awaits both named tasks and ends iteration."""
    feed = make_feed()
    async with feed:
        assert sorted(_feed_tasks()) == ["feed.bybit.heartbeat", "feed.bybit.receive"]
        await fake.ws.wait_for_requests("ping", 1)
    assert _feed_tasks() == []
    assert feed.state is FeedState.CLOSED
    with pytest.raises(StopAsyncIteration):
        await anext(feed)


async def test_entering_twice_raises_when_the_feed_is_running(
    make_feed: Callable[..., BybitKlineFeed],
) -> None:
    """The feed cannot be re-entered while running, but can be reused after it exits."""
    feed = make_feed()
    async with feed:
        with pytest.raises(RuntimeError, match="re-entered"):
            await feed.__aenter__()
    async with feed:
        assert feed.state is FeedState.STREAMING


async def test_no_bar_is_dropped_when_the_queue_is_full(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed]
) -> None:
    """With a one-slot queue the receive loop waits, and every bar still arrives in order."""
    async with make_feed(queue_maxsize=1) as feed:
        await fake.advance_bars(4)
        bars = await _bars(feed, 8)
        assert feed.reconnects == 0
    starts = [e.bar.start_ms for e in bars if e.bar.symbol == "ETHUSDT"]
    assert starts == [b.start_ms for b in _ETH[_HISTORY : _HISTORY + 4]]


async def test_enter_raises_without_retrying_when_the_handshake_is_refused(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed], sleep: _RecordingSleep
) -> None:
    """An HTTP 404 on the upgrade is fatal: the entry fails at once and nothing is left running."""
    feed = make_feed(ws_url=fake.ws_url + "/wrong")
    with pytest.raises(InvalidStatus):
        async with asyncio.timeout(_STEP_S):
            await feed.__aenter__()
    assert sleep.delays == []
    assert _feed_tasks() == []


async def test_reconnects_when_the_server_closes_the_socket_during_the_handshake(
    fake: FakeBybit, make_feed: Callable[..., BybitKlineFeed], sleep: _RecordingSleep
) -> None:
    """A handshake cut off by a TCP close is a network failure: the feed backs off and retries."""
    async with _HandshakeDropper(fake.ws_url) as proxy, make_feed(ws_url=proxy.url) as feed:
        proxy.drops = 2
        fake.abort_connections()
        event = await _reconnected(feed)
        await fake.advance_bars(1)
        bars = await _bars(feed, 2)
        assert feed.state is FeedState.STREAMING
    assert proxy.dropped == 2
    assert len(sleep.delays) == 3  # the dropped connection, then each cut-off handshake
    assert event.last_starts == {}
    assert [e.bar.start_ms for e in bars] == [_BTC[_HISTORY].start_ms] * 2
