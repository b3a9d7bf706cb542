"""Tests for trader.replay.rejections: counting and logging rejected input."""

from __future__ import annotations

from structlog.testing import capture_logs

from trader.errors import DataError
from trader.replay.rejections import Rejection, RejectionCounter


def _rejection(reason: str, line: int = 3) -> Rejection:
    return Rejection(reason, "open=nan", "BTCUSDT", "data/BTCUSDT_5m.csv", line)


def test_counts_grouped_by_reason_when_rejections_are_recorded() -> None:
    """as_dict gives one count per reason, reasons sorted, and total sums them."""
    counter = RejectionCounter()
    with capture_logs():
        for reason in ("non_finite", "duplicate", "non_finite"):
            counter.record(_rejection(reason))

    assert counter.as_dict() == {"duplicate": 1, "non_finite": 2}
    assert counter.total == 3


def test_each_rejection_logged_once_with_context_when_not_quiet() -> None:
    """Every recorded rejection is one input_rejected warning with its key-value context."""
    counter = RejectionCounter()

    with capture_logs() as logs:
        counter.record(_rejection("non_finite", line=7))

    assert logs == [
        {
            "event": "input_rejected",
            "log_level": "warning",
            "reason": "non_finite",
            "detail": "open=nan",
            "symbol": "BTCUSDT",
            "source": "data/BTCUSDT_5m.csv",
            "line": 7,
        }
    ]


def test_counted_without_logging_when_quiet() -> None:
    """Quiet mode (a resumed replay re-reading input) counts but logs nothing."""
    counter = RejectionCounter(quiet=True)

    with capture_logs() as logs:
        counter.record(_rejection("unparseable_row"))
        counter.quiet = False
        counter.record(_rejection("unparseable_row", line=4))

    assert counter.as_dict() == {"unparseable_row": 2}
    assert [entry["line"] for entry in logs] == [4]


def test_rejection_keeps_error_fields_when_built_from_data_error() -> None:
    """from_error copies reason, detail and symbol, falling back to the given symbol."""
    with_symbol = Rejection.from_error(
        DataError("bad_end", "end=1", symbol="ETHUSDT"), source="r.jsonl", line=2, symbol="X"
    )
    without = Rejection.from_error(DataError("unknown_frame"), source="r.jsonl", line=5)

    assert with_symbol == Rejection("bad_end", "end=1", "ETHUSDT", "r.jsonl", 2)
    assert without == Rejection("unknown_frame", "", None, "r.jsonl", 5)
