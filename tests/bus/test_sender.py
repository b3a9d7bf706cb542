"""`send_command`: what `trader kill`/`resume` publish on `<prefix>/control` (real Mosquitto)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from pydantic import SecretStr

from tests.bus.listener import Listener
from tests.support import services
from trader.bus import ControlVerifier, VerifiedCommand
from trader.bus.sender import send_command
from trader.config import MqttSettings
from trader.domain import ControlCommand

_SECRET = "sender-test-secret-0123456789"


def _settings(prefix: str, **extra: object) -> MqttSettings:
    return MqttSettings(
        url=f"mqtt://{services.MQTT_HOST}:{services.MQTT_PORT}", topic_prefix=prefix, **extra
    )


@pytest.mark.mqtt
async def test_kill_goes_unsigned_and_resume_signed_and_the_daemon_side_accepts_both() -> None:
    """A kill goes out as sent, a resume signed, each naming its stored row; the daemon's
    verifier accepts both."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    settings = _settings(prefix, control_secret=SecretStr(_SECRET))
    async with Listener(f"{prefix}/control") as listener:
        assert await send_command(settings, ControlCommand.KILL, "stop", flatten=False, event_id=41)
        assert await send_command(settings, ControlCommand.RESUME, "go", flatten=False, event_id=42)
        messages = await listener.collect(2)
    verifier = ControlVerifier(secret=_SECRET, max_age_ms=30_000)
    outcomes = [
        verifier.verify(bytes(m.payload), now_ms=orjson.loads(bytes(m.payload)).get("ts_ms", 0))
        for m in messages
    ]
    kill, resume = outcomes
    assert isinstance(kill, VerifiedCommand)
    assert isinstance(resume, VerifiedCommand)
    assert (kill.command, kill.flatten, kill.authenticated) == (ControlCommand.KILL, False, False)
    assert (resume.command, resume.authenticated) == (ControlCommand.RESUME, True)
    # Each names the row it is stored as, so the daemon does not store it again.
    assert (kill.event_id, resume.event_id) == (41, 42)


async def test_resume_without_a_secret_and_an_unreachable_broker_send_nothing() -> None:
    """No broker, no secret for a resume, or no url: False, and nothing raised."""
    unreachable = MqttSettings(url="mqtt://127.0.0.1:9", timeout_s=1.0)
    assert not await send_command(unreachable, ControlCommand.KILL, "x", flatten=True)
    assert not await send_command(
        _settings("p"), ControlCommand.RESUME, "needs a signature", flatten=False
    )
    assert not await send_command(MqttSettings(), ControlCommand.KILL, "no url", flatten=True)
