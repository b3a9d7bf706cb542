"""Operator commands on `<prefix>/control`: parsing and authentication, sans-I/O.

Owns the wire format of a control command, which commands need a signature, the canonical form
that is signed, and the freshness and replay rules. A command is one JSON object:

    {"command": "kill" | "resume" | "flatten",   required
     "reason": "...",                             optional string (at most 500 characters)
     "flatten": true,                             optional, kill only (default true)
     "event_id": 7,                               optional, see below
     "ts_ms": 1718000000000,                      epoch ms when it was signed
     "nonce": "b8c1...",                          8 to 128 characters, never reused
     "signature": "<64 hex digits>"}              HMAC-SHA256, see below

Any other field, a wrong type, or a payload over 4 KiB is malformed.

Who may send what. kill and flatten only ever stop or reduce trading, so any client the broker
lets publish may send them, signed or not; a signature that is present but does not verify does
not block them (it would be a failure in the unsafe direction) and just leaves `authenticated`
False. Every other command (today: resume, which reopens trading) must carry `ts_ms`, `nonce`
and a valid `signature`, must be at most `max_age_ms` old (or early, for clock skew), and its
nonce must not have been seen in that window. New commands are signed-only by default: the
unsigned set is an allow-list.

The canonical form: the command object without "signature", keys sorted, encoded as compact
UTF-8 JSON with no insignificant whitespace and no ASCII escaping of non-ASCII characters
(`orjson.dumps(body, option=orjson.OPT_SORT_KEYS)`; in Python's json module,
`json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives the same bytes
for these fields). The signature is the lowercase hex HMAC-SHA256 of those bytes with
`mqtt.control_secret`. The verifier re-encodes the object it parsed, so what is verified is
exactly what is acted on.

`event_id` names the `control_events` row the sender already stored the command as (`trader
kill`/`resume` store first, then publish): the daemon then only wakes its poll for that row
instead of storing the command a second time. It is inside the signed bytes, so a signed
command cannot be pointed at another row. A message without it (any other sender) is stored
as a new row, as is one naming a row that does not hold the same command.

Retained messages are rejected: the broker replays a retained copy to every new subscriber, and
an old kill would otherwise re-fire at each daemon start (the live copy was applied when sent).

Limits: the nonce cache lives in memory, so a signed command captured in the last `max_age_ms`
could be replayed once after a daemon restart; keep `control_max_age_s` short.

It must not do I/O, read a clock (`now_ms` is passed in), log, or apply a command: the daemon
stores and applies what `ControlVerifier.verify` returns.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from trader.domain import ControlCommand
from trader.errors import ConfigError

#: Commands accepted without a signature: they can only stop or reduce trading.
UNSIGNED_COMMANDS = frozenset({ControlCommand.KILL, ControlCommand.FLATTEN})
MAX_PAYLOAD_BYTES = 4_096
MAX_REASON_CHARS = 500
MIN_NONCE_CHARS = 8
MAX_NONCE_CHARS = 128
#: How much of a rejected payload a `ControlRejection` keeps for the log and the database.
MAX_RAW_CHARS = 1_000
_SIGNATURE_HEX_CHARS = 64
_FIELDS = frozenset({"command", "reason", "flatten", "event_id", "ts_ms", "nonce", "signature"})
_T = TypeVar("_T")


class RejectReason(StrEnum):
    """Why a control message was not accepted; stable labels for logs and storage."""

    MALFORMED = "malformed"
    UNKNOWN_COMMAND = "unknown_command"
    RETAINED = "retained"
    UNSIGNED = "unsigned"
    NOT_CONFIGURED = "not_configured"
    FORGED = "forged"
    STALE = "stale"
    REPLAYED = "replayed"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command that passed every check, ready to be stored and applied.

    Attributes:
        command: kill, resume or flatten.
        reason: The operator's reason ("" when none was given).
        flatten: Whether a kill also closes every position (always True for flatten).
        authenticated: The signature verified (always True for commands that need one).
        ts_ms: When it was signed, if it carried a time.
        nonce: Its nonce, if it carried one.
        event_id: The `control_events` row its sender stored it as, if it named one.
    """

    command: ControlCommand
    reason: str
    flatten: bool
    authenticated: bool
    ts_ms: int | None = None
    nonce: str | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class ControlRejection:
    """A control message that was refused.

    Attributes:
        reason: The stable label.
        detail: One human line on what exactly was wrong.
        raw: The payload as text (undecodable bytes replaced), cut to `MAX_RAW_CHARS`.
    """

    reason: RejectReason
    detail: str
    raw: str


ControlOutcome = VerifiedCommand | ControlRejection


class _Rejected(Exception):
    """Internal: a check failed; `verify` turns it into a `ControlRejection`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Fields:
    body: dict[str, Any]
    command: ControlCommand
    reason: str
    flatten: bool
    ts_ms: int | None
    nonce: str | None
    signature: str | None
    event_id: int | None


def canonical_bytes(command: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: `command` without "signature", keys sorted, compact JSON."""
    body = {key: value for key, value in command.items() if key != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_command(
    command: Mapping[str, Any], secret: str, *, now_ms: int, nonce: str
) -> dict[str, Any]:
    """Return `command` with `ts_ms`, `nonce` and its `signature` added (for clients and tests).

    Args:
        command: At least {"command": ...}; any "signature" in it is replaced.
        secret: The shared `mqtt.control_secret`.
        now_ms: The signing time, epoch ms.
        nonce: A value never used before (e.g. `secrets.token_hex(16)`).
    """
    body = {key: value for key, value in command.items() if key != "signature"}
    body.update(ts_ms=now_ms, nonce=nonce)
    body["signature"] = _hmac_hex(secret.encode(), canonical_bytes(body))
    return body


class ControlVerifier:
    """Turns raw control payloads into `VerifiedCommand` or `ControlRejection`.

    Stateful only in its nonce cache, which holds each accepted nonce until its command would be
    stale anyway, and at most `max_nonces` of them (beyond that, signed commands are refused as
    `overloaded` rather than forgetting a nonce that could then be replayed).

    Args:
        secret: The shared HMAC key, or None to refuse every command that needs a signature.
        max_age_ms: Largest distance between a signed command's `ts_ms` and now.
        max_nonces: Most nonces remembered at once.

    Raises:
        ConfigError: A limit is not positive.
    """

    def __init__(self, *, secret: str | None, max_age_ms: int, max_nonces: int = 10_000) -> None:
        if max_age_ms <= 0 or max_nonces <= 0:
            raise ConfigError("control max age and nonce cache size must be positive")
        self._secret = secret.encode() if secret is not None else None
        self._max_age_ms = max_age_ms
        self._max_nonces = max_nonces
        self._nonces: set[str] = set()
        self._expiry: list[tuple[int, str]] = []  # heap of (expires_ms, nonce)

    def verify(self, raw: bytes, *, now_ms: int, retained: bool = False) -> ControlOutcome:
        """Parse and check one control payload.

        Args:
            raw: The MQTT payload.
            now_ms: Wall-clock epoch ms (the signer's clock is a wall clock too).
            retained: The broker delivered it from its retained store.

        Returns:
            The accepted command, or the rejection with its reason.
        """
        try:
            if retained:
                raise _Rejected(RejectReason.RETAINED, "retained control messages are ignored")
            fields = _parse(raw)
            if fields.command in UNSIGNED_COMMANDS:
                return self._unsigned(fields)
            return self._signed(fields, now_ms)
        except _Rejected as rejected:
            text = raw[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")[:MAX_RAW_CHARS]
            return ControlRejection(rejected.reason, rejected.detail, text)

    def _unsigned(self, fields: _Fields) -> VerifiedCommand:
        authenticated = (
            fields.signature is not None
            and self._secret is not None
            and hmac.compare_digest(
                _hmac_hex(self._secret, canonical_bytes(fields.body)), fields.signature
            )
        )
        return VerifiedCommand(
            fields.command,
            fields.reason,
            fields.flatten,
            authenticated,
            fields.ts_ms,
            fields.nonce,
            fields.event_id,
        )

    def _signed(self, fields: _Fields, now_ms: int) -> VerifiedCommand:
        if fields.signature is None:
            raise _Rejected(RejectReason.UNSIGNED, f"{fields.command} must be signed")
        if fields.ts_ms is None or fields.nonce is None:
            raise _Rejected(RejectReason.MALFORMED, "a signed command needs ts_ms and nonce")
        if self._secret is None:
            raise _Rejected(
                RejectReason.NOT_CONFIGURED, "mqtt.control_secret is unset: signed commands refused"
            )
        expected = _hmac_hex(self._secret, canonical_bytes(fields.body))
        if not hmac.compare_digest(expected, fields.signature):
            raise _Rejected(RejectReason.FORGED, "signature does not match")
        age_ms = now_ms - fields.ts_ms
        if abs(age_ms) > self._max_age_ms:
            raise _Rejected(
                RejectReason.STALE, f"ts_ms is {age_ms} ms from now (limit {self._max_age_ms})"
            )
        self._expire(now_ms)
        if fields.nonce in self._nonces:
            raise _Rejected(RejectReason.REPLAYED, "nonce already used")
        if len(self._nonces) >= self._max_nonces:
            raise _Rejected(RejectReason.OVERLOADED, "too many signed commands in the window")
        self._nonces.add(fields.nonce)
        heapq.heappush(self._expiry, (fields.ts_ms + self._max_age_ms, fields.nonce))
        return VerifiedCommand(
            fields.command, fields.reason, False, True, fields.ts_ms, fields.nonce, fields.event_id
        )

    def _expire(self, now_ms: int) -> None:
        """Forget nonces whose commands are stale by now: a replay of them fails on age."""
        while self._expiry and self._expiry[0][0] < now_ms:
            _, nonce = heapq.heappop(self._expiry)
            self._nonces.discard(nonce)


def _parse(raw: bytes) -> _Fields:
    """Decode and type-check a payload (no authentication)."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise _Rejected(RejectReason.MALFORMED, f"{len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Rejected(RejectReason.MALFORMED, f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Rejected(RejectReason.MALFORMED, "not a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _Rejected(RejectReason.MALFORMED, f"unknown field(s): {', '.join(unknown)}")
    name = _typed(body, "command", str)
    if name is None:
        raise _Rejected(RejectReason.MALFORMED, "command is missing")
    try:
        command = ControlCommand(name)
    except ValueError as exc:
        raise _Rejected(RejectReason.UNKNOWN_COMMAND, f"unknown command {name[:40]!r}") from exc
    reason = _typed(body, "reason", str) or ""
    if len(reason) > MAX_REASON_CHARS:
        raise _Rejected(RejectReason.MALFORMED, f"reason exceeds {MAX_REASON_CHARS} characters")
    flatten = _typed(body, "flatten", bool)
    if flatten is not None and command is not ControlCommand.KILL:
        raise _Rejected(RejectReason.MALFORMED, "flatten is a field of kill only")
    ts_ms = _typed(body, "ts_ms", int)
    if ts_ms is not None and ts_ms <= 0:
        raise _Rejected(RejectReason.MALFORMED, "ts_ms must be positive epoch ms")
    event_id = _typed(body, "event_id", int)
    if event_id is not None and event_id <= 0:
        raise _Rejected(RejectReason.MALFORMED, "event_id must be a positive row id")
    nonce = _typed(body, "nonce", str)
    if nonce is not None and not MIN_NONCE_CHARS <= len(nonce) <= MAX_NONCE_CHARS:
        raise _Rejected(
            RejectReason.MALFORMED, f"nonce must be {MIN_NONCE_CHARS}..{MAX_NONCE_CHARS} characters"
        )
    signature = _typed(body, "signature", str)
    if signature is not None:
        signature = signature.lower()
        if len(signature) != _SIGNATURE_HEX_CHARS or not set(signature) <= set(string.hexdigits):
            raise _Rejected(RejectReason.MALFORMED, "signature must be 64 hex digits")
    if command is ControlCommand.FLATTEN:
        flatten = True
    return _Fields(
        body=body,
        command=command,
        reason=reason,
        flatten=True if flatten is None else flatten,
        ts_ms=ts_ms,
        nonce=nonce,
        signature=signature,
        event_id=event_id,
    )


def _typed(body: dict[str, Any], key: str, kind: type[_T]) -> _T | None:
    """`body[key]` when present and of `kind` (bool is not an int here); None when absent."""
    if key not in body:
        return None
    value = body[key]
    if type(value) is not kind:  # exact: `True` must not pass as an int
        raise _Rejected(RejectReason.MALFORMED, f"{key} must be {kind.__name__}")
    return value
