"""REST backfill of closed klines from Bybit v5 through ccxt (reference bybit-v5.md B1, B2, C).

Owns one `ccxt.async_support.bybit` instance (linear markets only, ccxt's own rate limiter on),
the newest-first paging of ``GET /v5/market/kline``, dropping the still-forming candle, and the
retry policy around each HTTP call:

    ccxt NetworkError (10006 RateLimitExceeded, 429, 5xx, timeouts, refused connections),
    and retCode 10000 (server timeout) or 10016 (server error) on an HTTP 200
        -> wait `Backoff.next_delay_s()`, retry, TransientError after `max_attempts` calls
    HTTP 403 (Bybit's IP ban: stop all HTTP for >= 10 min)
        -> wait `forbidden_pause_s`, retry (counts as an attempt too)
    10001 (bad symbol or interval, ccxt BadRequest/BadSymbol)  -> ConfigError
    any other ccxt error                                       -> FatalError

A 403 is detected on the response itself: ccxt calls `on_rest_response(code, ...)` for every
HTTP reply before mapping errors, and our subclass raises `_IpBanned` there when the code is 403.
That needs no shared "last status" state and no parsing of ccxt's exception text (ccxt would
otherwise raise ExchangeNotAvailable, a NetworkError indistinguishable from a 5xx).

Bybit's transient server-side failures 10000 and 10016 (reference B1) arrive as business errors
with HTTP 200, which ccxt maps to a plain ExchangeError (10016 by its code table, 10000 by
default), the class every request-level error shares. Our subclass checks the parsed body's
``retCode`` in `handle_errors`, before ccxt maps it, and raises `_ServerFault`, a NetworkError,
so these take the retry path above instead of ending the daemon on the first reply.

Rows that fail `validate_bar` (or cannot be parsed) are skipped, logged as
``backfill_row_rejected`` and counted per reason in `RestBackfill.rejected_rows`.

It must not decide *when* to backfill, hold bars between calls, write to the database or read
the wall clock: callers pass ``now_ms`` (e.g. from `server_time_ms`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import ccxt.async_support as ccxt_async
import structlog

from trader.domain import Bar, BarSource, interval_ms
from trader.errors import ConfigError, DataError, FatalError, TransientError
from trader.feeds.backoff import Backoff
from trader.feeds.validation import validate_bar

_log = structlog.get_logger(__name__)

#: Bybit's largest kline page (B1).
KLINE_PAGE_LIMIT_MAX = 1000
#: Bybit asks clients to stop all HTTP for at least 10 minutes after a 403 (B1).
FORBIDDEN_PAUSE_S_DEFAULT = 600.0
_HTTP_FORBIDDEN = 403
#: Bybit's server-side transient retCodes (B1): 10000 server timeout, 10016 server error.
_SERVER_FAULT_RET_CODES = frozenset({10000, 10016})
_ROW_FIELDS = 7  # start, open, high, low, close, volume, turnover: all strings

Sleep = Callable[[float], Awaitable[None]]


class _IpBanned(ccxt_async.ExchangeNotAvailable):  # type: ignore[misc]  # ccxt is untyped
    """An HTTP 403 from Bybit; still an ExchangeNotAvailable for ccxt-aware callers."""


class _ServerFault(ccxt_async.ExchangeNotAvailable):  # type: ignore[misc]  # ccxt is untyped
    """Bybit retCode 10000 or 10016 on an HTTP 200: the server failed, so retrying may succeed."""


class _Bybit(ccxt_async.bybit):  # type: ignore[misc]  # ccxt is untyped
    """ccxt's bybit with a 403 told apart from a 5xx, and Bybit's server faults retryable."""

    def on_rest_response(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        response_headers: Any,
        response_body: str,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        """Raise `_IpBanned` on HTTP 403, else defer to ccxt (which strips the body)."""
        if code == _HTTP_FORBIDDEN:
            raise _IpBanned(f"{self.id} {method} {url} {code} {reason} {response_body[:200]}")
        return super().on_rest_response(
            code,
            reason,
            url,
            method,
            response_headers,
            response_body,
            request_headers,
            request_body,
        )

    def handle_errors(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        """Raise `_ServerFault` on retCode 10000/10016, else defer to ccxt's error mapping."""
        # safe_integer: Bybit sends retCode as a number, but a string must not slip through.
        ret_code = self.safe_integer(response, "retCode") if isinstance(response, dict) else None
        if ret_code in _SERVER_FAULT_RET_CODES:
            raise _ServerFault(f"{self.id} {method} {url} retCode {ret_code} {body[:200]}")
        return super().handle_errors(
            code,
            reason,
            url,
            method,
            headers,
            body,
            response,
            request_headers,
            request_body,
        )


class RestBackfill:
    """Closed Bybit v5 linear klines over REST, as an async context manager owning ccxt.

    Use as ``async with RestBackfill(rest_url=..., ...) as backfill:``. It can be entered again
    after it exits (a fresh ccxt instance each time) but not while it is entered. Calls on one
    instance are meant to be awaited one at a time (the backfill after a reconnect is serial).

    Args:
        rest_url: Base URL, e.g. ``"https://api.bybit.com"`` (a trailing slash is dropped).
        interval: Bybit interval code, e.g. ``"5"``.
        backoff: Delays between retries of rate-limited or failed calls; reset on success.
        sleep: Awaitable sleep, injected so tests record delays instead of waiting.
        max_attempts: Calls made for one request before giving up (at least 1).
        forbidden_pause_s: Wait after an HTTP 403 before trying again.
        page_limit: Rows asked for per kline call, 1 to 1000.

    Attributes:
        rejected_rows: Kline rows skipped since construction, per `DataError` reason.

    Raises:
        ConfigError: When a number is out of range or the interval is unknown.
    """

    def __init__(
        self,
        *,
        rest_url: str,
        interval: str,
        backoff: Backoff,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
        forbidden_pause_s: float = FORBIDDEN_PAUSE_S_DEFAULT,
        page_limit: int = KLINE_PAGE_LIMIT_MAX,
    ) -> None:
        try:
            self._length_ms = interval_ms(interval)
        except ValueError as exc:
            raise ConfigError(str(exc), key="interval") from exc
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}", key="max_attempts")
        if forbidden_pause_s < 0:
            raise ConfigError(
                f"forbidden_pause_s must be >= 0, got {forbidden_pause_s}", key="forbidden_pause_s"
            )
        if not 1 <= page_limit <= KLINE_PAGE_LIMIT_MAX:
            raise ConfigError(
                f"page_limit must be in [1, 1000], got {page_limit}", key="page_limit"
            )
        self._rest_url = rest_url.rstrip("/")
        self._interval = interval
        self._backoff = backoff
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._forbidden_pause_s = forbidden_pause_s
        self._page_limit = page_limit
        self._exchange: Any = None  # the ccxt boundary: untyped
        self.rejected_rows: Counter[str] = Counter()

    async def __aenter__(self) -> RestBackfill:
        """Create the ccxt exchange (no request is made yet)."""
        if self._exchange is not None:
            raise RuntimeError("RestBackfill is already entered; it cannot be re-entered")
        exchange = _Bybit(
            {"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["linear"]}}}
        )
        # Mutate the existing dict: urls['api'] also holds the websocket URLs (reference C).
        exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = self._rest_url
        self._exchange = exchange
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close ccxt's HTTP session."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()

    async def server_time_ms(self) -> int:
        """Bybit's clock (``GET /v5/market/time``, top-level ``time``), epoch ms UTC.

        Raises:
            TransientError: Retries ran out.
            DataError: The response has no integer ``time``.
        """
        response = await self._call("public_get_v5_market_time", {}, symbol=None)
        time_ms = response.get("time") if isinstance(response, Mapping) else None
        if type(time_ms) is not int:
            raise DataError("bad_time_response", f"time={time_ms!r}")
        return time_ms

    async def closed_bars(
        self, symbol: str, *, from_start_ms: int, to_start_ms: int, now_ms: int
    ) -> list[Bar]:
        """Every closed bar with ``from_start_ms <= start < to_start_ms``, oldest first.

        Pages newest first (Bybit returns the newest ``limit`` rows of a window): each next
        page ends one millisecond before the oldest start seen, until ``from_start_ms`` or an
        empty or short page is reached. A bar is closed when ``start + interval <= now_ms``.

        Args:
            symbol: Exchange symbol, e.g. ``"BTCUSDT"``.
            from_start_ms: First start wanted (inclusive).
            to_start_ms: Start where the wanted range ends (exclusive).
            now_ms: Exchange time now; newer bars are still forming.

        Returns:
            Validated bars (source REST), unique by start, ascending.

        Raises:
            ConfigError: Bybit rejected the symbol or interval (10001).
            TransientError: Retries ran out.
            FatalError: ccxt raised an error that retrying cannot fix.
            DataError: The response is not a kline list, or paging made no progress.
        """
        # The newest start that is closed at now_ms, capped by the exclusive upper bound.
        end_ms = min(to_start_ms - 1, now_ms - self._length_ms)
        found: dict[int, Bar] = {}
        while end_ms >= from_start_ms:
            params = {
                "category": "linear",
                "symbol": symbol,
                "interval": self._interval,
                "start": from_start_ms,
                "end": end_ms,
                "limit": self._page_limit,
            }
            response = await self._call("public_get_v5_market_kline", params, symbol=symbol)
            rows = _kline_rows(response, symbol)
            oldest_ms = end_ms + 1
            for row in rows:
                bar = self._parse_row(symbol, row)
                if bar is None:
                    continue
                oldest_ms = min(oldest_ms, bar.start_ms)
                if from_start_ms <= bar.start_ms <= end_ms:
                    found[bar.start_ms] = bar
            if len(rows) < self._page_limit:
                break  # a short page is the oldest data in the window
            if oldest_ms > end_ms:
                # A full page with no usable start: asking again would loop forever.
                raise DataError("kline_paging_stalled", f"end={end_ms}", symbol=symbol)
            end_ms = oldest_ms - 1
        return [found[start_ms] for start_ms in sorted(found)]

    async def warm_up(self, symbol: str, *, bars: int, now_ms: int) -> list[Bar]:
        """The last ``bars`` closed bars before ``now_ms``, oldest first.

        Fewer come back when the exchange has fewer (a new listing, or gaps in its data).

        Raises:
            ValueError: ``bars`` is below 1.
            ConfigError, TransientError, FatalError, DataError: As for `closed_bars`.
        """
        if bars < 1:
            raise ValueError(f"bars must be >= 1, got {bars}")
        # The forming bar starts at the grid point at or before now; everything before it closed.
        forming_start_ms = now_ms - now_ms % self._length_ms
        return await self.closed_bars(
            symbol,
            from_start_ms=forming_start_ms - bars * self._length_ms,
            to_start_ms=forming_start_ms,
            now_ms=now_ms,
        )

    def _parse_row(self, symbol: str, row: object) -> Bar | None:
        """One raw kline row to a validated bar, or None (logged and counted) when it is bad."""
        try:
            if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != _ROW_FIELDS:
                raise DataError("bad_row_shape", repr(row)[:200], symbol=symbol)
            try:
                start_ms = int(row[0])
                values = [float(text) for text in row[1:]]
            except (TypeError, ValueError) as exc:
                raise DataError("bad_row_number", repr(row)[:200], symbol=symbol) from exc
            return validate_bar(
                symbol,
                self._interval,
                start_ms,
                *values,
                end_ms=None,
                source=BarSource.REST,
            )
        except DataError as exc:
            self.rejected_rows[exc.reason] += 1
            _log.warning(
                "backfill_row_rejected", symbol=symbol, reason=exc.reason, detail=exc.detail
            )
            return None

    async def _call(self, method: str, params: Mapping[str, Any], *, symbol: str | None) -> Any:
        """Call one ccxt implicit-API method with the module's retry policy."""
        if self._exchange is None:
            raise RuntimeError("RestBackfill is not entered; use `async with`")
        endpoint = getattr(self._exchange, method)
        attempt = 0
        failure: Exception
        while True:
            attempt += 1
            try:
                response = await endpoint(dict(params))
            except _IpBanned as exc:
                banned, failure = True, exc
            except ccxt_async.BadRequest as exc:
                # 10001: our request is wrong (symbol or interval); retrying repeats the answer.
                raise ConfigError(
                    f"Bybit rejected {method} for symbol {symbol!r} "
                    f"interval {self._interval!r}: {exc}",
                    key="symbol",
                ) from exc
            except ccxt_async.NetworkError as exc:
                banned, failure = False, exc
            except ccxt_async.BaseError as exc:
                raise FatalError(f"{method} failed for symbol {symbol!r}: {exc}") from exc
            else:
                self._backoff.reset()
                return response
            if attempt >= self._max_attempts:
                raise TransientError(
                    f"{method} for symbol {symbol!r} failed {attempt} times: {failure}"
                ) from failure
            # A 403 is an IP ban, not congestion: Bybit wants a long fixed silence, not jitter.
            delay_s = self._forbidden_pause_s if banned else self._backoff.next_delay_s()
            _log.warning(
                "backfill_forbidden" if banned else "backfill_retrying",
                method=method,
                symbol=symbol,
                attempt=attempt,
                delay_s=delay_s,
                error=type(failure).__name__,
            )
            await self._sleep(delay_s)


def _kline_rows(response: Any, symbol: str) -> list[Any]:
    """The ``result.list`` of a kline response; DataError when the envelope is malformed."""
    result = response.get("result") if isinstance(response, Mapping) else None
    rows = result.get("list") if isinstance(result, Mapping) else None
    if not isinstance(rows, list):
        raise DataError("bad_kline_response", repr(response)[:200], symbol=symbol)
    return rows
