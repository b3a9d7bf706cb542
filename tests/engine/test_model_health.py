"""A model-backed strategy's health reaches risk: refused inputs are events, a failure halts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.support.candles import load_candles
from tests.support.daemon_harness import FIXTURES
from tests.support.engine_harness import ListSink, run_engine, settings_for, slices
from trader.domain import Decision
from trader.pipeline import build_engine

_BARS = load_candles(FIXTURES / "BTCUSDT_5m.csv.gz", "BTCUSDT", "5")[:400]
_FEATURES = {"tactical_window": 32, "strategic_window": 64, "scale_window": 32}


class _AilingModel:
    """Holds; refuses one input on its 3rd call and reports a failure from its 5th on."""

    name = "ailing"
    model_version = "ailing/1"

    def __init__(self) -> None:
        self.calls = 0
        self.last_rejections: list[tuple[str, str]] = []
        self.halted_reason: str | None = None

    def decide(self, contexts: Sequence[Any]) -> list[Decision]:
        self.calls += 1
        self.last_rejections = [(contexts[0].bar.symbol, "feature_not_finite")] * (self.calls == 3)
        if self.calls >= 5:
            self.halted_reason = "RuntimeError: boom"
        return [Decision.hold(c.bar.symbol, c.bar.start_ms) for c in contexts]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


async def test_refused_input_is_a_risk_event_and_a_failed_model_halts_once() -> None:
    """Each refused input is stored as an event; a model failure halts trading exactly once."""
    settings = settings_for("noop", features=_FEATURES)
    sink = ListSink()
    engine = build_engine(settings, run_id="t", sink=sink, strategy=_AilingModel())
    await run_engine(settings, slices(_BARS), engine=engine, sink=sink)

    events = sink.rows("risk_events")
    refused = [e for e in events if e["kind"] == "model_input_rejected"]
    halts = [e for e in events if e["kind"] == "halted"]
    assert [(e["symbol"], e["detail"]) for e in refused] == [("BTCUSDT", "feature_not_finite")]
    assert len(halts) == 1
    assert halts[0]["detail"] == "error: strategy ailing: RuntimeError: boom"
    assert engine.risk.state.value == "HALTED"


async def test_failed_model_halts_once_across_a_restart() -> None:
    """After the operator resumes a model halt, a restart from a later snapshot does not halt
    again: the uninterrupted run would not have either."""
    settings = settings_for("noop", features=_FEATURES)
    cut = len(_BARS) - 20  # the model has failed by then (ready from bar 366, fails on call 5)
    model = _AilingModel()
    engine = build_engine(settings, run_id="t", sink=ListSink(), strategy=model)
    await run_engine(settings, slices(_BARS[:cut]), engine=engine)
    assert model.halted_reason is not None
    await engine.resume(reason="operator checked the model", now_ms=_BARS[cut].start_ms)
    state = engine.state_dict()
    sink = ListSink()
    resumed = build_engine(settings, run_id="t", sink=sink, strategy=model)
    resumed.load_state_dict(state)
    for bar_slice in slices(_BARS[:cut]):
        resumed.warm(bar_slice)
    await run_engine(settings, slices(_BARS[cut:]), engine=resumed, sink=sink)
    assert [e["kind"] for e in sink.rows("risk_events")] == []
    assert resumed.risk.state.value == "ACTIVE"
