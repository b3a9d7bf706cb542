"""Running `trader run` against a `FakeBybit`, in-process or as a process, and reading its DB.

Owns the test configuration of the daemon (small feature windows so warm-up fits the fixtures,
fast pings and staleness so faults resolve in a second, fast REST retries) and the SQLite
queries the daemon tests assert on. The fake's clock moves only when a test advances it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.candles import load_candles
from tests.support.fake_bybit import FakeBybit
from tests.support.record_process import clean_env
from trader.config import Settings, load_settings
from trader.daemon import DaemonOptions, DaemonSummary, run_daemon
from trader.domain import Bar, interval_ms
from trader.features.buffer import warmup_bars
from trader.feeds.backoff import Backoff

FIXTURES = Path(__file__).parent.parent / "fixtures"
BTC = load_candles(FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")
ETH = load_candles(FIXTURES / "ETHUSDT_5m.csv.gz", "ETHUSDT", "5")
FIVE_MIN_MS = interval_ms("5")
STRATEGIC_WINDOW = 64
SCALE_WINDOW = 32
#: Bars the daemon fetches at start-up with the test windows.
WARMUP_BARS = warmup_bars(strategic_window=STRATEGIC_WINDOW, scale_window=SCALE_WINDOW)
#: Bars already closed when the fake starts: the warm-up plus a few the daemon does not need.
HISTORY = WARMUP_BARS + 20

#: TRADER_* settings of every daemon test (the database URL and fake URLs are added per test).
BASE_ENV: dict[str, str] = {
    "TRADER_FEED__INTERVAL": "5",
    "TRADER_FEED__PING_INTERVAL_S": "0.5",
    "TRADER_FEED__PING_TIMEOUT_S": "1.0",
    "TRADER_FEED__STALENESS_S": "2.0",
    "TRADER_FEED__CONFIRM_GRACE_S": "5.0",
    "TRADER_FEED__STARTUP_TIMEOUT_S": "20",
    "TRADER_FEED__REST_FORBIDDEN_PAUSE_S": "0.2",
    "TRADER_FEATURES__TACTICAL_WINDOW": "32",
    "TRADER_FEATURES__STRATEGIC_WINDOW": str(STRATEGIC_WINDOW),
    "TRADER_FEATURES__SCALE_WINDOW": str(SCALE_WINDOW),
    "TRADER_STRATEGY__NAME": "ema_cross",
    "TRADER_STRATEGY__EMA_FAST": "8",
    "TRADER_STRATEGY__EMA_SLOW": "21",
    "TRADER_DATABASE__FLUSH_INTERVAL_MS": "50",
}


def fake_env(fake: FakeBybit, db_path: Path, symbols: str) -> dict[str, str]:
    """The TRADER_* variables that point a daemon at `fake` and `db_path`."""
    return BASE_ENV | {
        "TRADER_FEED__WS_URL": fake.ws_url,
        "TRADER_FEED__REST_URL": fake.rest_url,
        "TRADER_FEED__SYMBOLS": symbols,
        "TRADER_DATABASE__URL": f"sqlite+aiosqlite:///{db_path}",
    }


def daemon_settings(fake: FakeBybit, db_path: Path, symbols: str, **env: str) -> Settings:
    """Settings equal to what the CLI loads from `fake_env` (plus `env`), built directly.

    The values go in as command-line style overrides, so TRADER_* variables of the test run
    would still win: daemon tests use the `no_trader_env` fixture.
    """
    sections: dict[str, dict[str, str]] = {}
    for key, value in (fake_env(fake, db_path, symbols) | env).items():
        section, name = key.removeprefix("TRADER_").lower().split("__")
        sections.setdefault(section, {})[name] = value
    empty = db_path.parent / "empty.toml"
    empty.touch()
    return load_settings(empty, **sections)


def fast_backoff() -> Backoff:
    """Reconnect and REST retry pacing for tests: 10 ms doubling to 50 ms."""
    return Backoff(base_s=0.01, cap_s=0.05, rng=random.Random(3))


def start_daemon_task(
    group: asyncio.TaskGroup,
    settings: Settings,
    stop: asyncio.Event,
    options: DaemonOptions | None = None,
) -> asyncio.Task[DaemonSummary]:
    """`run_daemon` as a task of `group` with fast backoffs."""
    return group.create_task(
        run_daemon(
            settings,
            options or DaemonOptions(),
            stop=stop,
            backoff=fast_backoff(),
            rest_backoff=fast_backoff(),
        ),
        name="test.daemon",
    )


async def start_daemon_process(
    fake: FakeBybit,
    *,
    workdir: Path,
    db_path: Path,
    symbols: str,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """`python -m trader run` on `fake`, as systemd would start it (`env` adds variables)."""
    (workdir / "trader.toml").touch()  # wins the config search over /etc/trader/trader.toml
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trader",
        "run",
        *args,
        cwd=workdir,
        env=clean_env(**(fake_env(fake, db_path, symbols) | (env or {}))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class DaemonDb:
    """Read-only queries on the daemon's SQLite file (a fresh connection per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query; an empty list while the file or its tables do not exist yet."""
        if not self.path.exists():
            return []
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as conn:
            try:
                return conn.execute(query, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def run_ids(self) -> list[str]:
        return [row[0] for row in self.rows("SELECT id FROM runs ORDER BY started_at")]

    def bar_keys(self) -> list[tuple[str, int]]:
        """(symbol, start_ms) of every stored bar, in order."""
        return [(s, t) for s, t in self.rows("SELECT symbol, start_ms FROM bars ORDER BY 2, 1")]

    def bars(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT symbol, start_ms, open, high, low, close, volume, source FROM bars "
            "ORDER BY start_ms, symbol"
        )

    def decision_keys(self, run_id: str) -> list[tuple[str, int]]:
        return [
            (s, t)
            for s, t in self.rows(
                "SELECT symbol, bar_start_ms FROM decisions WHERE run_id = ? ORDER BY 2, 1",
                run_id,
            )
        ]

    def decisions(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT symbol, bar_start_ms, action, size, confidence, decision_type "
            "FROM decisions WHERE run_id = ? ORDER BY bar_start_ms, symbol",
            run_id,
        )

    def fills(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT f.order_id, f.symbol, f.side, f.qty, f.price, f.fee, f.ts_ms FROM fills f "
            "JOIN orders o ON o.id = f.order_id WHERE o.run_id = ? ORDER BY f.ts_ms, f.order_id",
            run_id,
        )

    def client_order_ids(self, run_id: str) -> list[str]:
        return [
            row[0]
            for row in self.rows("SELECT client_order_id FROM orders WHERE run_id = ?", run_id)
        ]

    def positions(self, run_id: str) -> dict[str, float]:
        return {
            symbol: float(qty)
            for symbol, qty in self.rows(
                "SELECT symbol, qty FROM positions WHERE run_id = ?", run_id
            )
        }

    def last_start(self) -> int | None:
        rows = self.rows("SELECT max(start_ms) FROM bars")
        return rows[0][0] if rows else None


def expected_keys(series: list[list[Bar]], first: int, last: int) -> list[tuple[str, int]]:
    """(symbol, start) of bars `first..last` (inclusive indexes) of every series, in order."""
    keys = [(bar.symbol, bar.start_ms) for bars in series for bar in bars[first : last + 1]]
    return sorted(keys, key=lambda key: (key[1], key[0]))


def signed_fill_sum(fills: list[tuple[Any, ...]]) -> dict[str, float]:
    """Per symbol, the sum of fill quantities signed by side."""
    total: dict[str, float] = {}
    for _order, symbol, side, qty, *_rest in fills:
        total[symbol] = total.get(symbol, 0.0) + (float(qty) if side == "buy" else -float(qty))
    return total


Probe = Callable[[], Any]
