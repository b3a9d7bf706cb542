"""The daemon's MQTT control intake: what it stores, and that its failure stops the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from trader.bus import ControlOutcome, VerifiedCommand
from trader.daemon import DatabaseControls, _mqtt_control_loop
from trader.domain import ControlCommand
from trader.errors import FatalError
from trader.persistence.database import make_engine


async def _outcomes(*items: ControlOutcome) -> AsyncIterator[ControlOutcome]:
    for item in items:
        yield item


async def test_session_poll_raises_when_storing_an_mqtt_command_failed(tmp_path: Path) -> None:
    """A kill over MQTT that cannot be stored fails the session's next poll, not nothing."""
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}")  # no control_events
    controls = DatabaseControls(db)
    woken: list[None] = []
    kill = VerifiedCommand(ControlCommand.KILL, "mqtt", flatten=True, authenticated=False)
    try:
        with structlog.testing.capture_logs() as logs:
            await _mqtt_control_loop(
                _outcomes(kill), db, "run-1", controls, lambda: woken.append(None)
            )
        with pytest.raises(FatalError, match="MQTT control") as info:
            await controls.pending()
    finally:
        await db.dispose()
    assert woken == [None]  # the session is told to poll at once
    assert info.value.__cause__ is not None
    assert [entry["event"] for entry in logs] == ["mqtt_control_failed"]
