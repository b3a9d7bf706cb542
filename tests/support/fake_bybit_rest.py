"""REST half of the Bybit v5 fake: kline, server time and instruments-info on a real aiohttp server.

Owns the HTTP routes with the semantics of reference bybit-v5.md B1-B3 (newest-first all-string
kline rows with the forming candle at index 0, the start/end/limit window rules, business errors
as HTTP 200 with retCode != 0), the REST faults (10006 "Too many visits!" and a plain-text 403) and
the record of every query received. It reads candles and the exchange clock through `MarketView`
and must not own the clock, any candle state or anything websocket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from trader.domain import Bar, interval_ms
from trader.replay.recording import format_decimal

KLINE_LIMIT_DEFAULT = 200
KLINE_LIMIT_MAX = 1000
_RET_PARAMS_ERROR = 10001
_RET_TOO_MANY_VISITS = 10006
_LAUNCH_MS = "1585526400000"  # BTCUSDT's launchTime in Bybit's own example

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MarketView(Protocol):
    """What the REST routes need to know about the virtual exchange."""

    @property
    def now_ms(self) -> int:
        """Exchange time now (UTC epoch ms)."""
        ...

    @property
    def interval(self) -> str:
        """The one Bybit interval code served."""
        ...

    @property
    def symbols(self) -> Sequence[str]:
        """The served symbols (upper-case exchange ids)."""
        ...

    def visible_bars(self, symbol: str) -> list[Bar]:
        """Bars that have started by now, oldest first; the last may be the forming one."""
        ...


@dataclass(frozen=True, slots=True)
class RestQuery:
    """One HTTP request the fake received: path and query parameters (order is not kept)."""

    path: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class FakeInstrument:
    """Trading rules served by instruments-info; defaults are Bybit's documented BTCUSDT example."""

    tick_size: str = "0.10"
    qty_step: str = "0.001"
    min_order_qty: str = "0.001"
    max_order_qty: str = "1190.000"
    max_mkt_order_qty: str = "500.000"
    min_notional_value: str = "5"


def select_klines(
    bars: Sequence[Bar], *, start_ms: int | None, end_ms: int | None, limit: int
) -> list[Bar]:
    """Apply kline's window rules (B1) to bars given oldest first; the result is newest first.

    start + end: starts in [start, end], both inclusive, the newest `limit` of them. Start only:
    anchored at the candle containing `start`, the oldest `limit` from there. End only or
    neither: the newest `limit` that started by `end`.
    """
    if start_ms is not None and end_ms is None:
        length_ms = interval_ms(bars[0].interval) if bars else 1
        anchor_ms = start_ms - start_ms % length_ms
        chosen = [bar for bar in bars if bar.start_ms >= anchor_ms][:limit]
    else:
        chosen = [
            bar
            for bar in bars
            if (start_ms is None or bar.start_ms >= start_ms)
            and (end_ms is None or bar.start_ms <= end_ms)
        ][-limit:]
    return chosen[::-1]


def kline_row(bar: Bar) -> list[str]:
    """One kline list row: seven strings, startTime first, in Bybit's o-h-l-c-v-t order."""
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover)
    return [str(bar.start_ms), *(format_decimal(value) for value in values)]


class FakeBybitRest:
    """The aiohttp server behind `FakeBybit.rest_url`, with its REST faults and query record.

    Args:
        market: the virtual exchange whose candles and clock are served.
        instruments: the rules per served symbol; symbols missing here get `FakeInstrument()`.
    """

    def __init__(self, market: MarketView, instruments: Mapping[str, FakeInstrument]) -> None:
        self._market = market
        self._instruments = dict(instruments)
        self._runner: web.AppRunner | None = None
        self._rate_limited_klines = 0
        self._forbidden_calls = 0
        self.queries: list[RestQuery] = []
        self.url = ""

    def rate_limit_next_klines(self, count: int) -> None:
        """Answer the next `count` kline calls with retCode 10006 (HTTP 200, no reset header)."""
        self._rate_limited_klines = count

    def forbid_next_calls(self, count: int) -> None:
        """Answer the next `count` calls to any route with a plain-text HTTP 403 (an IP ban)."""
        self._forbidden_calls = count

    async def start(self) -> str:
        """Bind to 127.0.0.1 on an OS-assigned port and return the base URL (no trailing slash)."""
        app = web.Application()
        app.router.add_get("/v5/market/kline", self._guarded(self._kline))
        app.router.add_get("/v5/market/time", self._guarded(self._time))
        app.router.add_get("/v5/market/instruments-info", self._guarded(self._instruments_info))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _guarded(self, handler: _Handler) -> _Handler:
        """Wrap a route so every call is recorded and the 403 fault applies to all of them."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            self.queries.append(RestQuery(path=request.path, params=dict(request.query)))
            if self._forbidden_calls > 0:
                self._forbidden_calls -= 1
                # Bybit's IP-ban refusals are not JSON, which is what clients must survive.
                return web.Response(status=403, text="403 Forbidden", content_type="text/plain")
            return await handler(request)

        return guarded

    def _envelope(self, ret_code: int, ret_msg: str, result: Mapping[str, Any]) -> web.Response:
        """Bybit's response envelope; business errors are HTTP 200 too."""
        body = {
            "retCode": ret_code,
            "retMsg": ret_msg,
            "result": result,
            "retExtInfo": {},
            "time": self._market.now_ms,
        }
        return web.json_response(body)

    async def _kline(self, request: web.Request) -> web.Response:
        """GET /v5/market/kline (B1)."""
        if self._rate_limited_klines > 0:
            self._rate_limited_klines -= 1
            return self._envelope(_RET_TOO_MANY_VISITS, "Too many visits!", {})
        query = request.query
        category = query.get("category", "linear")
        symbol = query.get("symbol", "")
        if category != "linear":
            return self._envelope(_RET_PARAMS_ERROR, "params error: category invalid", {})
        # Case-sensitive on purpose: Bybit rejects lower-case symbols.
        if symbol not in self._market.symbols:
            return self._envelope(_RET_PARAMS_ERROR, "params error: symbol invalid", {})
        if query.get("interval") != self._market.interval:
            return self._envelope(_RET_PARAMS_ERROR, "Invalid period!", {})
        try:
            limit = int(query.get("limit", KLINE_LIMIT_DEFAULT))
            start_ms = _optional_int(query.get("start"))
            end_ms = _optional_int(query.get("end"))
        except ValueError:
            return self._envelope(_RET_PARAMS_ERROR, "params error: not an integer", {})
        if not 1 <= limit <= KLINE_LIMIT_MAX:
            return self._envelope(_RET_PARAMS_ERROR, "params error: limit invalid", {})
        bars = select_klines(
            self._market.visible_bars(symbol), start_ms=start_ms, end_ms=end_ms, limit=limit
        )
        rows = [kline_row(bar) for bar in bars]
        return self._envelope(0, "OK", {"category": "linear", "symbol": symbol, "list": rows})

    async def _time(self, request: web.Request) -> web.Response:
        """GET /v5/market/time (B2): the virtual clock, not the wall clock."""
        now_ms = self._market.now_ms
        result = {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}
        return self._envelope(0, "OK", result)

    async def _instruments_info(self, request: web.Request) -> web.Response:
        """GET /v5/market/instruments-info (B3): one page, `nextPageCursor` ""."""
        query = request.query
        if query.get("category") != "linear":
            return self._envelope(_RET_PARAMS_ERROR, "params error: category invalid", {})
        symbols: Sequence[str] = self._market.symbols
        if "symbol" in query:
            if query["symbol"] not in symbols:
                return self._envelope(_RET_PARAMS_ERROR, "params error: symbol invalid", {})
            symbols = [query["symbol"]]
        # Only Trading contracts are served; PreLaunch (or a later page) has nothing.
        if query.get("status", "Trading") != "Trading" or query.get("cursor"):
            symbols = []
        rows = [self._instrument_row(symbol) for symbol in symbols]
        return self._envelope(0, "OK", {"category": "linear", "list": rows, "nextPageCursor": ""})

    def _instrument_row(self, symbol: str) -> dict[str, Any]:
        """One linear perpetual in the field layout of Bybit's example (B3)."""
        rules = self._instruments.get(symbol, FakeInstrument())
        tick_places = len(rules.tick_size.partition(".")[2])
        return {
            "symbol": symbol,
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": symbol.removesuffix("USDT"),
            "quoteCoin": "USDT",
            "settleCoin": "USDT",
            "launchTime": _LAUNCH_MS,
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(tick_places),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": rules.tick_size,
                "maxPrice": "1999999.80",
                "tickSize": rules.tick_size,
            },
            "lotSizeFilter": {
                "maxOrderQty": rules.max_order_qty,
                "maxMktOrderQty": rules.max_mkt_order_qty,
                "minOrderQty": rules.min_order_qty,
                "qtyStep": rules.qty_step,
                "postOnlyMaxOrderQty": rules.max_order_qty,
                "minNotionalValue": rules.min_notional_value,
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "copyTrading": "both",
        }


def _optional_int(text: str | None) -> int | None:
    """Parse an optional integer query parameter; ValueError when it is not an integer."""
    return None if text is None else int(text)
