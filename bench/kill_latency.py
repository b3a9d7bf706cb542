"""Kill-switch latency: `trader kill` invoked -> the running daemon flat and HALTED.

A daemon (`run_daemon`, seeded `random` strategy so it holds positions) trades against the local
fake exchange. Each round makes sure it is trading with an open position (resuming and
advancing bars as needed), then starts `trader kill` as a new process, exactly as an operator
would, and stops the clock when the database shows the kill applied, no open position and the
`halted` event. The CLI's own start-up (interpreter, imports) is inside the measurement.

Two paths: `database` (no MQTT anywhere: the daemon polls `control_events`) and `mqtt` (the CLI
also publishes on `<prefix>/control` of the local Mosquitto, which the daemon subscribes to).
Prints median and worst of N rounds per path.

    PYTHONPATH=. .venv/bin/python bench/kill_latency.py [--rounds 20] [--paths database,mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

_SYMBOLS = "BTCUSDT,ETHUSDT"


def _count(db: object, sql: str, *params: object) -> int:
    rows = db.rows(sql, *params)  # type: ignore[attr-defined]
    return int(rows[0][0]) if rows else 0


async def _wait(probe: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(probe):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not get there")
        await asyncio.sleep(0.002)


async def _rounds(path: str, rounds: int, workdir: Path) -> list[float]:
    from tests.support.daemon_harness import BTC, ETH, HISTORY, DaemonDb, daemon_settings
    from tests.support.daemon_harness import start_daemon_task as start
    from tests.support.fake_bybit import FakeBybit
    from trader.persistence import control
    from trader.persistence.control import ControlCommand
    from trader.persistence.database import make_engine

    db = DaemonDb(workdir / f"kill-{path}.db")
    mqtt_env = (
        {
            "TRADER_MQTT__URL": "mqtt://127.0.0.1:1883",
            "TRADER_MQTT__TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        }
        if path == "mqtt"
        else {}
    )
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADER_", "PYTHONASYNC"))}
    cli_env |= {"TRADER_DATABASE__URL": f"sqlite+aiosqlite:///{db.path}"} | mqtt_env
    (workdir / "trader.toml").touch()
    trader = str(Path(sys.executable).parent / "trader")
    latencies: list[float] = []
    stop = asyncio.Event()
    async with FakeBybit(BTC + ETH, start_ms=BTC[HISTORY].start_ms) as fake:
        settings = daemon_settings(
            fake, db.path, _SYMBOLS, TRADER_STRATEGY__NAME="random", **mqtt_env
        )
        store = make_engine(f"sqlite+aiosqlite:///{db.path}")

        def caught_up() -> bool:
            return db.last_start() == fake.market.forming_start_ms - 300_000

        def positioned() -> bool:
            run = db.run_ids()[-1]
            return any(q for q in db.positions(run).values())

        async with asyncio.TaskGroup() as group:
            start(group, settings, stop)
            await _wait(caught_up)
            for index in range(rounds):
                halted_before = _count(db, "SELECT count(*) FROM risk_events WHERE kind='halted'")
                if index:
                    await control.request(store, ControlCommand.RESUME, "bench", source="cli")
                    await _wait(
                        lambda: (
                            _count(
                                db, "SELECT count(*) FROM control_events WHERE applied_at IS NULL"
                            )
                            == 0
                        )
                    )
                while not positioned():
                    await fake.advance_bars(1)
                    await _wait(caught_up)
                started = time.perf_counter()
                process = await asyncio.create_subprocess_exec(
                    trader,
                    "kill",
                    "--reason",
                    f"bench {index}",
                    cwd=workdir,
                    env=cli_env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )

                def killed(before: int = halted_before) -> bool:
                    halted = _count(db, "SELECT count(*) FROM risk_events WHERE kind='halted'")
                    return halted > before and not positioned()

                await _wait(killed)
                latencies.append(time.perf_counter() - started)
                await process.wait()
            stop.set()
        await store.dispose()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--paths", default="database,mqtt")
    args = parser.parse_args()
    for key in [key for key in os.environ if key.startswith("TRADER_")]:
        del os.environ[key]
    from trader.logs import configure_logging

    configure_logging("ERROR", "json")
    print(f"{'path':>9} {'rounds':>7} {'median s':>9} {'worst s':>8}")
    for path in args.paths.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            latencies = asyncio.run(_rounds(path, args.rounds, Path(tmp)))
        print(
            f"{path:>9} {len(latencies):>7} {statistics.median(latencies):>9.3f} "
            f"{max(latencies):>8.3f}"
        )


if __name__ == "__main__":
    main()
