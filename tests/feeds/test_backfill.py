"""Tests of `RestBackfill` against `FakeBybit` over real loopback HTTP through ccxt."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from trader.domain import Bar, BarSource, interval_ms
from trader.errors import ConfigError, TransientError
from trader.feeds.backfill import RestBackfill
from trader.feeds.backoff import Backoff

_FIXTURES = Path(__file__).parents[1] / "fixtures"
_BTC = load_candles(_FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:400]
_HISTORY = 300  # bars already closed when the fake starts; bar 300 is forming
_LENGTH_MS = interval_ms("5")
_PAUSE_S = 600.0


def _rest(bars: list[Bar]) -> list[Bar]:
    """The fixture bars as the backfill must return them (stamped REST)."""
    return [dataclasses.replace(bar, source=BarSource.REST) for bar in bars]


class _RecordingSleep:
    """An injected sleep that records each requested delay and returns at once."""

    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    """A running fake with 300 closed BTCUSDT bars and bar 300 forming."""
    async with FakeBybit(_BTC, start_ms=_BTC[_HISTORY].start_ms) as running:
        yield running


@pytest.fixture
def sleep() -> _RecordingSleep:
    """The recording sleep handed to the backfill."""
    return _RecordingSleep()


@pytest.fixture
def make_backfill(fake: FakeBybit, sleep: _RecordingSleep) -> Callable[..., RestBackfill]:
    """Build a backfill pointed at the fake, with a seeded backoff and the recording sleep."""

    def build(*, page_limit: int = 1000, max_attempts: int = 3) -> RestBackfill:
        return RestBackfill(
            rest_url=fake.rest_url,
            interval="5",
            backoff=Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(7)),
            sleep=sleep,
            max_attempts=max_attempts,
            forbidden_pause_s=_PAUSE_S,
            page_limit=page_limit,
        )

    return build


def _kline_queries(fake: FakeBybit) -> int:
    return sum(query.path == "/v5/market/kline" for query in fake.rest_queries)


async def test_gap_is_filled_with_exact_fixture_bars_when_range_is_closed(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill]
) -> None:
    """A range of closed bars comes back equal to the fixture, turnover included, source REST."""
    async with make_backfill() as backfill:
        bars = await backfill.closed_bars(
            "BTCUSDT",
            from_start_ms=_BTC[100].start_ms,
            to_start_ms=_BTC[130].start_ms,
            now_ms=fake.now_ms,
        )
    assert bars == _rest(_BTC[100:130])
    assert all(bar.turnover > 0 and bar.source is BarSource.REST for bar in bars)
    assert backfill.rejected_rows == {}


async def test_pages_join_without_duplicates_or_holes_when_range_spans_several_pages(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill]
) -> None:
    """With page_limit=50 a 250-bar range takes five newest-first pages and joins exactly."""
    async with make_backfill(page_limit=50) as backfill:
        bars = await backfill.closed_bars(
            "BTCUSDT",
            from_start_ms=_BTC[10].start_ms,
            to_start_ms=_BTC[260].start_ms,
            now_ms=fake.now_ms,
        )
    assert bars == _rest(_BTC[10:260])
    starts = [bar.start_ms for bar in bars]
    assert starts == list(range(starts[0], starts[-1] + _LENGTH_MS, _LENGTH_MS))
    kline = [query for query in fake.rest_queries if query.path == "/v5/market/kline"]
    assert len(kline) == 5
    ends = [int(query.params["end"]) for query in kline]
    assert ends == sorted(ends, reverse=True)  # newest page first


async def test_forming_candle_is_never_returned_when_range_reaches_past_now(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill]
) -> None:
    """An open-ended range stops at the last closed bar, before and after the clock moves."""
    far_future_ms = _BTC[-1].start_ms + 100 * _LENGTH_MS
    async with make_backfill() as backfill:
        before = await backfill.closed_bars(
            "BTCUSDT",
            from_start_ms=_BTC[290].start_ms,
            to_start_ms=far_future_ms,
            now_ms=fake.now_ms,
        )
        await fake.advance_bars(2)
        after = await backfill.closed_bars(
            "BTCUSDT",
            from_start_ms=_BTC[290].start_ms,
            to_start_ms=far_future_ms,
            now_ms=fake.now_ms,
        )
    assert before == _rest(_BTC[290:_HISTORY])
    assert after == _rest(_BTC[290 : _HISTORY + 2])


async def test_warm_up_returns_requested_count_when_history_is_long_enough(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill]
) -> None:
    """warm_up gives exactly `bars` bars ending at the last closed one."""
    async with make_backfill(page_limit=60) as backfill:
        bars = await backfill.warm_up("BTCUSDT", bars=150, now_ms=fake.now_ms)
    assert bars == _rest(_BTC[_HISTORY - 150 : _HISTORY])


async def test_rate_limited_call_is_retried_with_backoff_when_10006_comes_twice(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill], sleep: _RecordingSleep
) -> None:
    """Two 10006 answers cost two backoff delays, then the bars arrive."""
    fake.rate_limit_next_klines(2)
    async with make_backfill() as backfill:
        bars = await backfill.warm_up("BTCUSDT", bars=10, now_ms=fake.now_ms)
    assert bars == _rest(_BTC[_HISTORY - 10 : _HISTORY])
    assert len(sleep.delays_s) == 2
    assert all(0.0 <= delay_s <= 4.0 for delay_s in sleep.delays_s)
    assert _kline_queries(fake) == 3


async def test_forbidden_call_pauses_then_retries_when_403_comes_once(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill], sleep: _RecordingSleep
) -> None:
    """One plain-text 403 costs one pause of forbidden_pause_s, then the bars arrive."""
    fake.forbid_next_calls(1)
    async with make_backfill() as backfill:
        bars = await backfill.warm_up("BTCUSDT", bars=10, now_ms=fake.now_ms)
    assert bars == _rest(_BTC[_HISTORY - 10 : _HISTORY])
    assert sleep.delays_s == [_PAUSE_S]


async def test_transient_error_is_raised_when_10006_outlasts_max_attempts(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill], sleep: _RecordingSleep
) -> None:
    """A rate limit that never lifts ends in TransientError after max_attempts calls."""
    fake.rate_limit_next_klines(100)
    async with make_backfill(max_attempts=3) as backfill:
        with pytest.raises(TransientError, match="failed 3 times"):
            await backfill.warm_up("BTCUSDT", bars=10, now_ms=fake.now_ms)
    assert len(sleep.delays_s) == 2
    assert _kline_queries(fake) == 3


@pytest.mark.parametrize("ret_code", [10016, 10000])
async def test_server_fault_is_retried_with_backoff_when_it_comes_twice(
    fake: FakeBybit,
    make_backfill: Callable[..., RestBackfill],
    sleep: _RecordingSleep,
    ret_code: int,
) -> None:
    """Bybit's server error/timeout (HTTP 200) costs a backoff delay each, then the bars arrive."""
    fake.fail_next_calls(2, ret_code=ret_code)
    async with make_backfill() as backfill:
        bars = await backfill.warm_up("BTCUSDT", bars=10, now_ms=fake.now_ms)
    assert bars == _rest(_BTC[_HISTORY - 10 : _HISTORY])
    assert len(sleep.delays_s) == 2
    assert all(0.0 <= delay_s <= 4.0 for delay_s in sleep.delays_s)
    assert _kline_queries(fake) == 3


@pytest.mark.parametrize("ret_code", [10016, 10000])
async def test_server_time_is_retried_when_a_server_fault_comes_once(
    fake: FakeBybit,
    make_backfill: Callable[..., RestBackfill],
    sleep: _RecordingSleep,
    ret_code: int,
) -> None:
    """The first call of a catch-up (server time) survives a server fault too."""
    fake.fail_next_calls(1, ret_code=ret_code)
    async with make_backfill() as backfill:
        now_ms = await backfill.server_time_ms()
    assert now_ms == fake.now_ms
    assert len(sleep.delays_s) == 1


@pytest.mark.parametrize("ret_code", [10016, 10000])
async def test_transient_error_is_raised_when_a_server_fault_outlasts_max_attempts(
    fake: FakeBybit,
    make_backfill: Callable[..., RestBackfill],
    sleep: _RecordingSleep,
    ret_code: int,
) -> None:
    """A server fault that never clears ends in TransientError after max_attempts calls."""
    fake.fail_next_calls(100, ret_code=ret_code)
    async with make_backfill(max_attempts=3) as backfill:
        with pytest.raises(TransientError, match=f"failed 3 times.*retCode {ret_code}"):
            await backfill.warm_up("BTCUSDT", bars=10, now_ms=fake.now_ms)
    assert len(sleep.delays_s) == 2
    assert _kline_queries(fake) == 3


async def test_config_error_names_symbol_when_symbol_is_unknown(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill], sleep: _RecordingSleep
) -> None:
    """Bybit's 10001 for an unknown symbol becomes a ConfigError naming it, with no retry."""
    async with make_backfill() as backfill:
        with pytest.raises(ConfigError, match="NOPEUSDT"):
            await backfill.warm_up("NOPEUSDT", bars=10, now_ms=fake.now_ms)
    assert sleep.delays_s == []
    assert _kline_queries(fake) == 1


async def test_server_time_follows_fake_clock_when_bars_advance(
    fake: FakeBybit, make_backfill: Callable[..., RestBackfill]
) -> None:
    """server_time_ms reports the fake's virtual clock before and after it moves."""
    async with make_backfill() as backfill:
        first_ms = await backfill.server_time_ms()
        await fake.advance_bars(3)
        second_ms = await backfill.server_time_ms()
    assert first_ms == _BTC[_HISTORY].start_ms
    assert second_ms == fake.now_ms == _BTC[_HISTORY + 3].start_ms + 12
