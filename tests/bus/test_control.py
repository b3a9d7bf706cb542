"""Tests for trader.bus.control: parsing, HMAC verification, freshness and replay of commands."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest

from trader.bus.control import (
    ControlRejection,
    ControlVerifier,
    RejectReason,
    VerifiedCommand,
    canonical_bytes,
    sign_command,
)
from trader.domain import ControlCommand

SECRET = "correct horse battery staple"
NOW_MS = 1_718_000_000_000
MAX_AGE_MS = 30_000


def _verifier(secret: str | None = SECRET, **kwargs: Any) -> ControlVerifier:
    return ControlVerifier(secret=secret, max_age_ms=MAX_AGE_MS, **kwargs)


def _signed(
    command: dict[str, Any] | None = None,
    *,
    secret: str = SECRET,
    ts_ms: int = NOW_MS,
    nonce: str = "nonce-0001",
) -> dict[str, Any]:
    body = command if command is not None else {"command": "resume", "reason": "all clear"}
    return sign_command(body, secret, now_ms=ts_ms, nonce=nonce)


def _raw(body: object) -> bytes:
    return orjson.dumps(body)


def _tampered() -> bytes:
    body = _signed()
    body["reason"] = "something else"
    return _raw(body)


ACCEPTED = [
    pytest.param(_raw({"command": "kill"}), ControlCommand.KILL, True, False, id="kill-unsigned"),
    pytest.param(
        _raw({"command": "kill", "reason": "r", "flatten": False}),
        ControlCommand.KILL,
        False,
        False,
        id="kill-no-flatten",
    ),
    pytest.param(
        _raw({"command": "flatten", "reason": "r"}),
        ControlCommand.FLATTEN,
        True,
        False,
        id="flatten",
    ),
    pytest.param(
        _raw(_signed({"command": "kill"}, secret="wrong")),
        ControlCommand.KILL,
        True,
        False,
        id="kill-bad-signature-still-stops",
    ),
    pytest.param(
        _raw(_signed({"command": "kill"})), ControlCommand.KILL, True, True, id="kill-signed"
    ),
    pytest.param(_raw(_signed()), ControlCommand.RESUME, False, True, id="resume-signed"),
]


@pytest.mark.parametrize(("raw", "command", "flatten", "authenticated"), ACCEPTED)
def test_command_is_accepted_when_policy_allows_it(
    raw: bytes, command: ControlCommand, flatten: bool, authenticated: bool
) -> None:
    """kill and flatten pass without a signature; resume passes only signed, fresh and new."""
    outcome = _verifier().verify(raw, now_ms=NOW_MS)
    assert isinstance(outcome, VerifiedCommand), outcome
    assert (outcome.command, outcome.flatten, outcome.authenticated) == (
        command,
        flatten,
        authenticated,
    )


REJECTED = [
    pytest.param(_raw({"command": "resume"}), RejectReason.UNSIGNED, id="resume-unsigned"),
    pytest.param(_raw(_signed(secret="guess")), RejectReason.FORGED, id="resume-wrong-secret"),
    pytest.param(_tampered(), RejectReason.FORGED, id="resume-tampered-after-signing"),
    pytest.param(
        _raw(_signed(ts_ms=NOW_MS - MAX_AGE_MS - 1)), RejectReason.STALE, id="resume-too-old"
    ),
    pytest.param(
        _raw(_signed(ts_ms=NOW_MS + MAX_AGE_MS + 1)), RejectReason.STALE, id="resume-from-future"
    ),
    pytest.param(b"{not json", RejectReason.MALFORMED, id="not-json"),
    pytest.param(b"", RejectReason.MALFORMED, id="empty"),
    pytest.param(b'["kill"]', RejectReason.MALFORMED, id="not-an-object"),
    pytest.param(_raw({"reason": "x"}), RejectReason.MALFORMED, id="command-missing"),
    pytest.param(_raw({"command": 1}), RejectReason.MALFORMED, id="command-not-a-string"),
    pytest.param(_raw({"command": "launch"}), RejectReason.UNKNOWN_COMMAND, id="unknown-command"),
    pytest.param(_raw({"command": "kill", "x": 1}), RejectReason.MALFORMED, id="unknown-field"),
    pytest.param(_raw({"command": "kill", "reason": 5}), RejectReason.MALFORMED, id="reason-type"),
    pytest.param(
        _raw({"command": "kill", "reason": "r" * 501}), RejectReason.MALFORMED, id="reason-long"
    ),
    pytest.param(
        _raw({"command": "resume", "flatten": True}), RejectReason.MALFORMED, id="flatten-on-resume"
    ),
    pytest.param(
        _raw({**_signed(), "ts_ms": str(NOW_MS)}), RejectReason.MALFORMED, id="ts-ms-a-string"
    ),
    pytest.param(_raw({**_signed(), "ts_ms": True}), RejectReason.MALFORMED, id="ts-ms-a-bool"),
    pytest.param(_raw({**_signed(), "nonce": "short"}), RejectReason.MALFORMED, id="nonce-short"),
    pytest.param(
        _raw({**_signed(), "signature": "zz" * 32}), RejectReason.MALFORMED, id="signature-not-hex"
    ),
    pytest.param(
        _raw({k: v for k, v in _signed().items() if k != "nonce"}),
        RejectReason.MALFORMED,
        id="signed-without-nonce",
    ),
    pytest.param(
        _raw({"command": "kill", "reason": "x" * 5_000}), RejectReason.MALFORMED, id="too-large"
    ),
    pytest.param(_raw({"command": "kill", "event_id": 0}), RejectReason.MALFORMED, id="id-zero"),
    pytest.param(
        _raw({"command": "kill", "event_id": "7"}), RejectReason.MALFORMED, id="id-a-string"
    ),
    pytest.param(
        _raw({**_signed({"command": "resume", "event_id": 7}), "event_id": 8}),
        RejectReason.FORGED,
        id="resume-pointed-at-another-row",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_command_is_rejected_with_reason_when_it_breaks_a_rule(
    raw: bytes, reason: RejectReason
) -> None:
    """Unsigned, forged, stale and malformed commands come back as a reasoned rejection."""
    outcome = _verifier().verify(raw, now_ms=NOW_MS)
    assert isinstance(outcome, ControlRejection), outcome
    assert outcome.reason is reason
    assert outcome.detail
    assert outcome.raw == raw.decode("utf-8", "replace")[:1_000]


def test_resume_is_rejected_as_replayed_when_its_nonce_was_seen() -> None:
    """The same signed resume delivered twice is accepted once and then refused as a replay."""
    verifier = _verifier()
    raw = _raw(_signed())
    assert isinstance(verifier.verify(raw, now_ms=NOW_MS), VerifiedCommand)
    outcome = verifier.verify(raw, now_ms=NOW_MS + 1_000)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.REPLAYED


def test_replay_is_rejected_as_stale_when_the_nonce_has_expired() -> None:
    """A nonce is forgotten only once its command is too old to pass the age check anyway."""
    verifier = _verifier(max_nonces=1)
    raw = _raw(_signed())
    assert isinstance(verifier.verify(raw, now_ms=NOW_MS), VerifiedCommand)
    later = NOW_MS + MAX_AGE_MS + 1
    outcome = verifier.verify(raw, now_ms=later)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.STALE
    # The expired nonce freed its slot for a fresh command.
    fresh = _raw(_signed(ts_ms=later, nonce="nonce-0002"))
    assert isinstance(verifier.verify(fresh, now_ms=later), VerifiedCommand)


def test_signed_command_is_refused_when_the_nonce_cache_is_full() -> None:
    """Past `max_nonces` fresh nonces the verifier refuses rather than forget one."""
    verifier = _verifier(max_nonces=1)
    assert isinstance(verifier.verify(_raw(_signed()), now_ms=NOW_MS), VerifiedCommand)
    outcome = verifier.verify(_raw(_signed(nonce="nonce-0002")), now_ms=NOW_MS)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.OVERLOADED


def test_resume_is_rejected_when_no_secret_is_configured() -> None:
    """Without `mqtt.control_secret` nothing can reopen trading over MQTT."""
    outcome = _verifier(secret=None).verify(_raw(_signed()), now_ms=NOW_MS)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.NOT_CONFIGURED


def test_kill_is_rejected_when_delivered_from_the_retained_store() -> None:
    """A retained copy is an old command replayed by the broker, not one sent now."""
    outcome = _verifier().verify(_raw({"command": "kill"}), now_ms=NOW_MS, retained=True)
    assert isinstance(outcome, ControlRejection)
    assert outcome.reason is RejectReason.RETAINED


def test_signature_from_stdlib_json_verifies_when_following_the_documented_form() -> None:
    """A client without orjson can sign: sorted keys, compact separators, UTF-8, hex HMAC."""
    body = {"command": "resume", "reason": "fertig – weiter", "ts_ms": NOW_MS, "nonce": "n-123456"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.encode() == canonical_bytes(body)
    signature = hmac.new(SECRET.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    outcome = _verifier().verify(_raw({**body, "signature": signature.upper()}), now_ms=NOW_MS)
    assert isinstance(outcome, VerifiedCommand)
    assert outcome.authenticated
    assert outcome.reason == "fertig – weiter"


def test_command_carries_the_row_it_names_when_the_sender_stored_it() -> None:
    """`event_id` comes through on unsigned kills and, signed, on resumes; absent means None."""
    verifier = _verifier()
    kill = verifier.verify(_raw({"command": "kill", "event_id": 7}), now_ms=NOW_MS)
    resume = verifier.verify(_raw(_signed({"command": "resume", "event_id": 8})), now_ms=NOW_MS)
    plain = verifier.verify(_raw({"command": "flatten"}), now_ms=NOW_MS)
    assert isinstance(kill, VerifiedCommand)
    assert isinstance(resume, VerifiedCommand)
    assert isinstance(plain, VerifiedCommand)
    assert (kill.event_id, resume.event_id, plain.event_id) == (7, 8, None)
    assert resume.authenticated
