"""`FakeBybit`: a local Bybit v5 (public linear websocket + market REST) on an accelerated clock.

Owns the virtual exchange clock and the candles it serves (`FakeMarket`, sans-I/O), the kline push
frames of reference bybit-v5.md A6/A7 (several confirm=false updates of the forming bar, then
exactly one confirm=true at rollover), the kline faults (paused pushes, dropped, duplicated and
out-of-order confirms, NaN and non-JSON frames), the REST server-fault switch (retCode 10000 and
10016 with HTTP 200, B1) and the composition of the two servers in `fake_bybit_ws` and
`fake_bybit_rest`, both bound to 127.0.0.1 on OS-assigned ports. Time moves
only when a test calls `advance_bars`, so nothing here waits on the wall clock. It must not be
imported by the daemon.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.support.fake_bybit_rest import FakeBybitRest, FakeInstrument, MarketView, RestQuery
from tests.support.fake_bybit_ws import FakeBybitWs, WsRequest
from trader.domain import Bar, interval_ms
from trader.replay.recording import format_decimal

#: Exchange push delay after the bar close (Bybit's sample confirm: 12 ms).
CONFIRM_DELAY_MS = 12
#: How long before a push its last trade happened.
_TRADE_LEAD_MS = 1
_TOPIC = re.compile(r"kline\.(?P<interval>[^.]+)\.(?P<symbol>[^.]+)")
#: Bybit's transient server-side retCodes (B1) and a retMsg for each. Neither message contains
#: "Request timeout", so ccxt maps both to a plain ExchangeError, as it does for Bybit's own.
SERVER_FAULTS: Mapping[int, str] = {
    10000: "Server Timeout",
    10016: "System error. Please try again later.",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeMarket:
    """The virtual exchange: candles per symbol and an explicit clock, with no I/O.

    The clock sits inside the forming bar after `step` of `updates_per_bar` unconfirmed updates;
    the forming bar's values move in equal steps from its open toward its final close (volume and
    turnover from 0), so every partial value stays inside the final candle.

    Args:
        bars: final candles, any order, several symbols, exactly one interval.
        updates_per_bar: confirm=false pushes per bar before its confirm.
        start_ms: initial exchange time; defaults to the first bar's start (nothing closed yet).

    Raises:
        ValueError: no bars, several intervals, or a negative `updates_per_bar`.
    """

    def __init__(self, bars: Sequence[Bar], *, updates_per_bar: int, start_ms: int | None) -> None:
        intervals = {bar.interval for bar in bars}
        if len(intervals) != 1:
            raise ValueError(f"bars must share exactly one interval, got {sorted(intervals)}")
        if updates_per_bar < 0:
            raise ValueError(f"updates_per_bar must be >= 0, got {updates_per_bar}")
        self._interval = intervals.pop()
        self._length_ms = interval_ms(self._interval)
        self._updates = updates_per_bar
        self._bars: dict[str, dict[int, Bar]] = {}
        for bar in sorted(bars, key=lambda bar: bar.start_ms):
            self._bars.setdefault(bar.symbol, {})[bar.start_ms] = bar
        self._symbols = sorted(self._bars)
        self._last_start_ms = max(bar.start_ms for bar in bars)
        first_ms = min(bar.start_ms for bar in bars) if start_ms is None else start_ms
        self.forming_start_ms = first_ms - first_ms % self._length_ms
        self.step = 0
        self._now_ms = first_ms

    @property
    def now_ms(self) -> int:
        """Exchange time now (UTC epoch ms)."""
        return self._now_ms

    @property
    def interval(self) -> str:
        """The one Bybit interval code served."""
        return self._interval

    @property
    def symbols(self) -> Sequence[str]:
        """The served symbols, sorted."""
        return self._symbols

    @property
    def updates_per_bar(self) -> int:
        """Unconfirmed pushes per bar."""
        return self._updates

    def is_topic_served(self, topic: str) -> bool:
        """Whether `topic` is `kline.<served interval>.<served symbol>` (case-sensitive)."""
        match = _TOPIC.fullmatch(topic)
        if match is None:
            return False
        return match["interval"] == self._interval and match["symbol"] in self._bars

    def can_advance(self) -> bool:
        """Whether a bar is still forming (so `roll_over` has something to close)."""
        return self.forming_start_ms <= self._last_start_ms

    def final_bar(self, symbol: str, start_ms: int) -> Bar | None:
        """The final candle starting at `start_ms`, if the data has one."""
        return self._bars[symbol].get(start_ms)

    def forming_bar(self, symbol: str) -> Bar | None:
        """The forming candle as it stands at the current step, or None in a gap."""
        final = self.final_bar(symbol, self.forming_start_ms)
        if final is None:
            return None
        return _partial(final, self.step / (self._updates + 1))

    def visible_bars(self, symbol: str) -> list[Bar]:
        """Closed bars and then the forming one, oldest first (what REST can see now)."""
        closed = [bar for start, bar in self._bars[symbol].items() if start < self.forming_start_ms]
        forming = self.forming_bar(symbol)
        return closed if forming is None else [*closed, forming]

    def step_update(self) -> None:
        """Move the clock to the next unconfirmed update of the forming bar."""
        self.step += 1
        self._now_ms = self.forming_start_ms + self.step * (self._length_ms // (self._updates + 1))

    def roll_over(self) -> int:
        """Close the forming bar and move to just after its close; return the closed start."""
        closed_ms = self.forming_start_ms
        self.forming_start_ms += self._length_ms
        self.step = 0
        self._now_ms = self.forming_start_ms + CONFIRM_DELAY_MS
        return closed_ms


def kline_item(bar: Bar, *, confirm: bool, trade_ms: int) -> dict[str, Any]:
    """One `data[]` element in A6's exact types (numbers for times, strings for the rest)."""
    return {
        "start": bar.start_ms,
        "end": bar.end_ms,
        "interval": bar.interval,
        "open": format_decimal(bar.open),
        "close": format_decimal(bar.close),
        "high": format_decimal(bar.high),
        "low": format_decimal(bar.low),
        "volume": format_decimal(bar.volume),
        "turnover": format_decimal(bar.turnover),
        "confirm": confirm,
        "timestamp": trade_ms,
    }


def kline_topic(interval: str, symbol: str) -> str:
    """The public kline topic name, e.g. `kline.5.BTCUSDT`."""
    return f"kline.{interval}.{symbol}"


def _partial(final: Bar, fraction: float) -> Bar:
    """The forming candle `fraction` of the way from its open to `final`, rounded like it."""
    price_places = max(_places(final.open), _places(final.close))
    close = round(final.open + (final.close - final.open) * fraction, price_places)
    return dataclasses.replace(
        final,
        close=close,
        high=max(final.open, close),
        low=min(final.open, close),
        volume=round(final.volume * fraction, _places(final.volume)),
        turnover=round(final.turnover * fraction, _places(final.turnover)),
    )


def _places(value: float) -> int:
    """Decimal places in a value's shortest text, so partial values look like final ones."""
    text = format_decimal(value)
    return len(text) - text.index(".") - 1 if "." in text else 0


class _FaultyRest(FakeBybitRest):
    """`FakeBybitRest` with one more fault: Bybit's server errors, retCode 10000/10016 on HTTP 200.

    The fault sits inside the recording and 403 wrapper, so faulted calls are still recorded and
    a pending 403 is answered first.
    """

    def __init__(self, market: MarketView, instruments: Mapping[str, FakeInstrument]) -> None:
        super().__init__(market, instruments)
        self._server_fault_code = 0
        self._server_fault_calls = 0

    def fail_next_calls(self, count: int, ret_code: int) -> None:
        """Answer the next `count` calls to any route with `ret_code` (a key of SERVER_FAULTS)."""
        if ret_code not in SERVER_FAULTS:
            raise ValueError(f"ret_code must be one of {sorted(SERVER_FAULTS)}, got {ret_code}")
        self._server_fault_code = ret_code
        self._server_fault_calls = count

    def _guarded(self, handler: _Handler) -> _Handler:
        async def faulted(request: web.Request) -> web.StreamResponse:
            if self._server_fault_calls > 0:
                self._server_fault_calls -= 1
                code = self._server_fault_code
                return self._envelope(code, SERVER_FAULTS[code], {})
            return await handler(request)

        return super()._guarded(faulted)


class FakeBybit:
    """A real websockets + aiohttp Bybit v5 fake on 127.0.0.1, driven by an explicit clock.

    Use as `async with FakeBybit(bars) as fake:`; connect to `fake.ws_url` and `fake.rest_url`,
    then `await fake.advance_bars(n)`. Fault switches apply to the next matching event only.

    Args:
        bars: final candles to serve (several symbols, one interval).
        updates_per_bar: confirm=false pushes of each forming bar before its confirm.
        start_ms: initial exchange time; defaults to the first bar's start.
        instruments: instruments-info rules per symbol (default: Bybit's BTCUSDT example).
    """

    def __init__(
        self,
        bars: Sequence[Bar],
        *,
        updates_per_bar: int = 2,
        start_ms: int | None = None,
        instruments: Mapping[str, FakeInstrument] | None = None,
    ) -> None:
        self.market = FakeMarket(bars, updates_per_bar=updates_per_bar, start_ms=start_ms)
        self.ws = FakeBybitWs(self.market.is_topic_served)
        self.rest = _FaultyRest(self.market, instruments or {})
        self.pushes_paused = False
        self._drop_confirm: set[str] = set()
        self._duplicate_confirm: set[str] = set()
        self._entered = False

    async def __aenter__(self) -> FakeBybit:
        """Start both servers (websocket first, as clients subscribe before they backfill)."""
        if self._entered:
            raise RuntimeError("FakeBybit is already running; it cannot be re-entered")
        self._entered = True
        await self.ws.start()
        try:
            await self.rest.start()
        except BaseException:
            await self.ws.close()
            self._entered = False
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop both servers in reverse order."""
        try:
            await self.rest.close()
        finally:
            await self.ws.close()
            self._entered = False

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:<port>/v5/public/linear`."""
        return self.ws.url

    @property
    def rest_url(self) -> str:
        """`http://127.0.0.1:<port>`, no trailing slash (what ccxt's `urls['api']` wants)."""
        return self.rest.url

    @property
    def now_ms(self) -> int:
        """Exchange time now (UTC epoch ms)."""
        return self.market.now_ms

    @property
    def ws_requests(self) -> list[WsRequest]:
        """Every text frame clients sent, in arrival order."""
        return self.ws.requests

    @property
    def rest_queries(self) -> list[RestQuery]:
        """Every HTTP request received, in arrival order (faulted ones included)."""
        return self.rest.queries

    async def advance_bars(self, count: int = 1, *, share_data: bool = False) -> None:
        """Run the clock through `count` bar closes, pushing to every subscribed topic.

        Per bar: `updates_per_bar` confirm=false pushes of the forming bar, then exactly one
        confirm=true push just after the close. Returns once every frame has been written.

        Args:
            count: bars to close.
            share_data: put the next bar's first update in the confirm push's `data[]` too.

        Raises:
            ValueError: the data has no forming bar left to close.
        """
        for _ in range(count):
            if not self.market.can_advance():
                raise ValueError(f"no bar left to close at {self.market.forming_start_ms}")
            for _ in range(self.market.updates_per_bar):
                self.market.step_update()
                for symbol in self.market.symbols:
                    forming = self.market.forming_bar(symbol)
                    if forming is not None and not self.pushes_paused:
                        item = kline_item(forming, confirm=False, trade_ms=self.now_ms - 1)
                        await self._push(symbol, [item])
            closed_ms = self.market.roll_over()
            for symbol in self.market.symbols:
                await self._push_confirm(symbol, closed_ms, share_data=share_data)

    def pause_pushes(self) -> None:
        """Stop all kline pushes; the clock and REST still move, so only REST can fill the gap."""
        self.pushes_paused = True

    def resume_pushes(self) -> None:
        """Push again from the next update on (nothing missed is replayed, as on Bybit)."""
        self.pushes_paused = False

    def drop_next_confirm(self, symbol: str) -> None:
        """Swallow the next confirm=true push for `symbol` (the bar stays final on REST)."""
        self._drop_confirm.add(symbol)

    def duplicate_next_confirm(self, symbol: str) -> None:
        """Send the next confirm=true push for `symbol` twice."""
        self._duplicate_confirm.add(symbol)

    async def push_old_confirm(self, symbol: str, bars_back: int = 1) -> None:
        """Push, now, a confirm=true for the bar that closed `bars_back` closes ago (out of order).

        Raises:
            ValueError: `bars_back` < 1 or no such closed bar in the data.
        """
        start_ms = self.market.forming_start_ms - bars_back * interval_ms(self.market.interval)
        bar = self.market.final_bar(symbol, start_ms) if bars_back >= 1 else None
        if bar is None:
            raise ValueError(f"no closed {symbol} bar {bars_back} bars back")
        await self._push(symbol, [kline_item(bar, confirm=True, trade_ms=bar.end_ms)])

    async def push_nan_kline(self, symbol: str) -> None:
        """Push the forming bar with `"close":"NaN"`: valid JSON, invalid value."""
        forming = self.market.forming_bar(symbol)
        if forming is None:
            raise ValueError(f"no forming {symbol} bar to corrupt")
        item = kline_item(forming, confirm=False, trade_ms=self.now_ms - 1) | {"close": "NaN"}
        await self._push(symbol, [item])

    async def push_text(self, text: str = '{"topic":"kline.5.') -> int:
        """Send raw (by default truncated, non-JSON) text to every connection."""
        return await self.ws.send_text(text)

    def reject_next_subscribe(self, topic: str) -> None:
        """Fail the next subscription to `topic` with `error:handler not found,topic:<t>`."""
        self.ws.reject_next_subscribe(topic)

    def stall_pongs(self, stalled: bool = True) -> None:
        """Stop (or restart) answering JSON pings; they are still recorded."""
        self.ws.stall_pongs = stalled

    async def close_connections(self, code: int = 1000, reason: str = "") -> None:
        """Close every client socket with a close frame."""
        await self.ws.close_connections(code, reason)

    def abort_connections(self) -> None:
        """Drop every client socket without a close frame (1006 on the client)."""
        self.ws.abort_connections()

    def rate_limit_next_klines(self, count: int = 1) -> None:
        """Answer the next `count` kline calls with retCode 10006 "Too many visits!" (HTTP 200)."""
        self.rest.rate_limit_next_klines(count)

    def forbid_next_calls(self, count: int = 1) -> None:
        """Answer the next `count` REST calls with a plain-text HTTP 403."""
        self.rest.forbid_next_calls(count)

    def fail_next_calls(self, count: int = 1, *, ret_code: int = 10016) -> None:
        """Answer the next `count` REST calls with Bybit's server error `ret_code` (HTTP 200).

        `ret_code` is 10016 "server error" or 10000 "server timeout" (SERVER_FAULTS).
        """
        self.rest.fail_next_calls(count, ret_code)

    async def _push_confirm(self, symbol: str, closed_ms: int, *, share_data: bool) -> None:
        """The rollover push for one symbol, with the confirm faults applied."""
        bar = self.market.final_bar(symbol, closed_ms)
        if bar is None or self.pushes_paused:
            return
        items = [kline_item(bar, confirm=True, trade_ms=bar.end_ms - _TRADE_LEAD_MS)]
        following = self.market.forming_bar(symbol)
        if share_data and following is not None:
            items.append(kline_item(following, confirm=False, trade_ms=self.now_ms - 1))
        if symbol in self._drop_confirm:
            self._drop_confirm.discard(symbol)
            return
        copies = 2 if symbol in self._duplicate_confirm else 1
        self._duplicate_confirm.discard(symbol)
        for _ in range(copies):
            await self._push(symbol, items)

    async def _push(self, symbol: str, items: list[dict[str, Any]]) -> None:
        """Send one snapshot push for `symbol`'s kline topic, stamped with the exchange clock."""
        topic = kline_topic(self.market.interval, symbol)
        frame = {"topic": topic, "type": "snapshot", "ts": self.now_ms, "data": items}
        await self.ws.broadcast(topic, frame)
