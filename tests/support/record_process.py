"""Start `python -m trader record` against a FakeBybit, as an operator (or systemd) would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.support.fake_bybit import FakeBybit

#: Environment the CLI must not inherit from the test run: our TRADER_* settings, asyncio debug
#: mode (its slow-step warnings would add stderr lines) and the runner's own systemd settings.
NOT_INHERITED = ("TRADER_", "PYTHONASYNCIODEBUG", "NOTIFY_SOCKET", "WATCHDOG_")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without what the CLI must not inherit, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
    env.update(settings)
    return env


async def start_record(
    fake: FakeBybit, *, workdir: Path, out: Path, symbols: str, **extra_env: str
) -> asyncio.subprocess.Process:
    """Run the recorder on `fake` with a fast flush; `extra_env` adds variables (NOTIFY_SOCKET)."""
    (workdir / "trader.toml").touch()  # wins the config search over /etc/trader/trader.toml
    env = clean_env(
        TRADER_FEED__WS_URL=fake.ws_url,
        TRADER_FEED__SYMBOLS=symbols,
        TRADER_FEED__INTERVAL="5",
        TRADER_RECORDER__FLUSH_INTERVAL_S="0.05",
        **extra_env,
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trader",
        "record",
        "--out",
        str(out),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
