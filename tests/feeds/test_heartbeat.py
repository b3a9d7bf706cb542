"""Tests for trader.feeds.heartbeat: the ping schedule, pong matching and topic staleness."""

from __future__ import annotations

import pytest

from trader.errors import ConfigError
from trader.feeds.frames import Pong, parse_frame
from trader.feeds.heartbeat import Heartbeat, StalenessWatch


def _pong(req_id: str | int) -> Pong:
    """A pong as parse_frame produces it from Bybit's linear reply (op "ping", ret_msg "pong")."""
    frame = parse_frame(
        {"success": True, "ret_msg": "pong", "conn_id": "c1", "req_id": req_id, "op": "ping"}
    )
    assert isinstance(frame, Pong)
    return frame


def _started(interval_s: float = 20.0, timeout_s: float = 10.0, now: float = 100.0) -> Heartbeat:
    heartbeat = Heartbeat(interval_s=interval_s, timeout_s=timeout_s)
    heartbeat.reset(now)
    return heartbeat


def test_no_ping_is_due_when_never_reset() -> None:
    """Without a connection there is nothing to ping and nothing to expire."""
    heartbeat = Heartbeat(interval_s=20.0, timeout_s=10.0)
    assert not heartbeat.ping_due(1e9)
    assert not heartbeat.expired(1e9)


@pytest.mark.parametrize(
    ("now", "due"),
    [(100.0, False), (119.9, False), (120.0, True), (135.0, True)],
)
def test_first_ping_is_due_when_interval_has_passed_since_reset(now: float, due: bool) -> None:
    """The first ping falls due interval_s after the (re)connect."""
    assert _started().ping_due(now) is due


def test_pings_follow_interval_when_sent_on_schedule() -> None:
    """Each ping pushes the next one interval_s later, answered or not."""
    heartbeat = _started()
    sent_at = []
    for tick in range(100, 200):
        now = float(tick)
        if heartbeat.ping_due(now):
            heartbeat.ping_frame(now)
            sent_at.append(now)
    assert sent_at == [120.0, 140.0, 160.0, 180.0]
    assert heartbeat.pings_sent == 4


def test_ping_frame_has_counter_req_id_when_built() -> None:
    """Ping frames are op ping with a string counter req_id that keeps rising."""
    heartbeat = _started()
    assert heartbeat.ping_frame(120.0) == {"op": "ping", "req_id": "1"}
    assert heartbeat.ping_frame(140.0) == {"op": "ping", "req_id": "2"}


def test_pong_clears_deadline_and_records_rtt_when_req_id_matches() -> None:
    """A matching pong stops expiry and yields the round-trip time."""
    heartbeat = _started()
    frame = heartbeat.ping_frame(120.0)
    heartbeat.on_pong(_pong(frame["req_id"]), 120.25)
    assert heartbeat.pongs_received == 1
    assert heartbeat.last_rtt_s == pytest.approx(0.25)
    assert not heartbeat.expired(500.0)


@pytest.mark.parametrize(
    ("now", "expired"),
    [(125.0, False), (130.0, False), (130.01, True), (200.0, True)],
)
def test_expires_when_no_pong_arrives_within_timeout(now: float, expired: bool) -> None:
    """An unanswered ping expires once more than timeout_s has passed."""
    heartbeat = _started()
    heartbeat.ping_frame(120.0)
    assert heartbeat.expired(now) is expired


def test_stale_pong_keeps_newer_deadline_when_older_ping_is_answered() -> None:
    """A pong for an older ping does not clear a newer ping's deadline."""
    heartbeat = _started(interval_s=5.0, timeout_s=8.0)
    first = heartbeat.ping_frame(105.0)
    heartbeat.ping_frame(110.0)
    heartbeat.on_pong(_pong(first["req_id"]), 111.0)
    assert heartbeat.last_rtt_s == pytest.approx(6.0)
    assert not heartbeat.expired(118.0)
    assert heartbeat.expired(118.5)


def test_newer_pong_clears_older_pings_when_it_arrives() -> None:
    """A pong for the newest ping answers every older outstanding one too."""
    heartbeat = _started(interval_s=5.0, timeout_s=8.0)
    heartbeat.ping_frame(105.0)
    second = heartbeat.ping_frame(110.0)
    heartbeat.on_pong(_pong(second["req_id"]), 111.0)
    assert not heartbeat.expired(200.0)
    assert heartbeat.pongs_received == 1


@pytest.mark.parametrize("req_id", ["", "99", 1, "kline.5.BTCUSDT"])
def test_pong_is_ignored_when_req_id_matches_no_outstanding_ping(req_id: str | int) -> None:
    """Unmatched pongs are counted but do not clear the deadline."""
    heartbeat = _started()
    heartbeat.ping_frame(120.0)
    heartbeat.ping_frame(140.0)
    heartbeat.on_pong(_pong("1"), 140.5)
    heartbeat.on_pong(_pong(req_id), 141.0)
    assert heartbeat.unmatched_pongs == 1
    assert heartbeat.pongs_received == 1
    assert heartbeat.expired(150.5)


def test_integer_pong_matches_when_server_echoes_number() -> None:
    """A req_id echoed as a JSON integer still matches its string counter."""
    heartbeat = _started()
    heartbeat.ping_frame(120.0)
    heartbeat.on_pong(_pong(1), 120.1)
    assert heartbeat.pongs_received == 1
    assert not heartbeat.expired(200.0)


def test_old_connection_pong_is_ignored_when_reset_for_reconnect() -> None:
    """Reset forgets outstanding pings, so their late pongs match nothing."""
    heartbeat = _started()
    old = heartbeat.ping_frame(120.0)
    heartbeat.reset(300.0)
    assert not heartbeat.expired(1000.0)
    assert not heartbeat.ping_due(319.0)
    assert heartbeat.ping_due(320.0)
    new = heartbeat.ping_frame(320.0)
    assert new["req_id"] != old["req_id"]
    heartbeat.on_pong(_pong(old["req_id"]), 320.5)
    assert heartbeat.unmatched_pongs == 1
    assert heartbeat.expired(330.5)


@pytest.mark.parametrize(("interval_s", "timeout_s"), [(0.0, 10.0), (20.0, 0.0), (-1.0, 10.0)])
def test_heartbeat_construction_fails_when_numbers_are_not_positive(
    interval_s: float, timeout_s: float
) -> None:
    """Zero or negative intervals and timeouts are refused."""
    with pytest.raises(ConfigError):
        Heartbeat(interval_s=interval_s, timeout_s=timeout_s)


def test_topic_is_stale_when_silent_past_limit() -> None:
    """A topic goes stale once silent for more than limit_s, and fresh again on data."""
    watch = StalenessWatch(limit_s=90.0)
    watch.reset(["kline.5.ETHUSDT", "kline.5.BTCUSDT"], 0.0)
    watch.seen("kline.5.BTCUSDT", 60.0)
    assert watch.stale(90.0) == []
    assert watch.stale(90.5) == ["kline.5.ETHUSDT"]
    assert watch.stale(151.0) == ["kline.5.BTCUSDT", "kline.5.ETHUSDT"]
    watch.seen("kline.5.ETHUSDT", 151.0)
    assert watch.stale(151.0) == ["kline.5.BTCUSDT"]


def test_outage_does_not_count_when_watch_is_reset_on_reconnect() -> None:
    """Reset restarts every clock and drops topics no longer watched."""
    watch = StalenessWatch(limit_s=90.0)
    watch.reset(["kline.5.BTCUSDT", "kline.5.ETHUSDT"], 0.0)
    watch.reset(["kline.5.BTCUSDT"], 500.0)
    assert watch.stale(590.0) == []
    assert watch.stale(591.0) == ["kline.5.BTCUSDT"]


def test_unwatched_topic_is_tracked_when_first_seen() -> None:
    """seen() on a new topic starts watching it."""
    watch = StalenessWatch(limit_s=10.0)
    watch.seen("kline.1.SOLUSDT", 5.0)
    assert watch.stale(16.0) == ["kline.1.SOLUSDT"]


def test_staleness_watch_construction_fails_when_limit_is_not_positive() -> None:
    """A zero limit would make every topic stale at once."""
    with pytest.raises(ConfigError):
        StalenessWatch(limit_s=0.0)
