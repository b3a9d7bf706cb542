"""`trader status` rendering and feed health, from a report built by hand."""

from __future__ import annotations

from trader.status import StatusReport, _feed_health, render_text

_CLOSE_MS = 1_750_000_200_000 + 300_000


def test_feed_health_by_the_age_of_the_newest_bar() -> None:
    """No bars yet, ok while the newest bar closed within two intervals, stale (with a hint to
    check the daemon) once it is older."""
    last = {"BTCUSDT": 1_750_000_200_000, "ETHUSDT": 1_750_000_200_000 - 300_000}
    assert _feed_health({}, "5", _CLOSE_MS) == "no bars yet"
    assert _feed_health(last, "5", _CLOSE_MS + 12_000) == "ok: the newest bar closed 12 s ago"
    stale = _feed_health(last, "5", _CLOSE_MS + 600_001)
    assert stale == "stale: the newest bar closed 600 s ago (is the daemon running?)"


def test_text_shows_state_reason_positions_and_the_latest_commands() -> None:
    """The text shows the state with its reason, drawdown as a percentage, positions sorted by
    symbol and the latest control command; the JSON keeps the positions as given."""
    report = StatusReport(
        run_id="paper-1",
        state="HALTED",
        reason="kill",
        detail="maintenance",
        drawdown=0.0123,
        equity="9876.5",
        peak_equity="10000",
        positions={"ETHUSDT": "-0.5", "BTCUSDT": "0.01"},
        last_bar_ms={"BTCUSDT": 1},
        feed="ok: the newest bar closed 3 s ago",
        model_version="ema_cross/21-50",
        controls=[
            {
                "id": 7,
                "command": "kill",
                "reason": "maintenance",
                "source": "cli",
                "applied_at": "2026-11-21T18:00:00+00:00",
            }
        ],
    )
    text = render_text(report)
    assert "trading state  HALTED (kill: maintenance)" in text
    assert "drawdown       1.23%" in text
    assert "positions      BTCUSDT 0.01, ETHUSDT -0.5" in text
    assert "control        #7 kill (cli): 'maintenance', applied 2026-11-21T18:00:00+00:00" in text
    assert report.as_json()["positions"] == {"ETHUSDT": "-0.5", "BTCUSDT": "0.01"}
