"""HRMStrategy over real buffers fed with real candles: safety, restart, staggering, batching."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from strategies.base import SymbolContext
from strategies.hrm.checkpoint import LoadedModel, fresh_model
from strategies.hrm.heads import FeatureBatch
from strategies.hrm.model import HRM, HRMCarry, HRMConfig, Inference
from strategies.hrm.strategy import HRMStrategy, strategic_phase
from tests.strategies.hrm.streams import (
    PoisonedView,
    Stream,
    fixture_bars,
    walk_bars,
    without_latency,
)
from trader.domain import Action, DecisionType

EVERY = 10


def _strategy(kind: str = "hrm", seed: int = 2) -> HRMStrategy:
    loaded = fresh_model("hrm" if kind == "hrm" else "flat", preset="tiny", seed=seed)
    return HRMStrategy(loaded, device="cpu", strategic_every=EVERY)


def _pair() -> Stream:
    stream = Stream({s: fixture_bars(s) for s in ("BTCUSDT", "ETHUSDT")})
    stream.warm()
    return stream


def test_decides_one_per_context_in_order_when_slice_arrives() -> None:
    """Each ready context gets its decision, in order, stamped with version and latency."""
    strategy, stream = _strategy(), _pair()
    for _ in range(2 * EVERY):
        contexts = stream.step()
        decisions = strategy.decide(contexts)
        assert [d.symbol for d in decisions] == [c.bar.symbol for c in contexts]
        assert [d.bar_start_ms for d in decisions] == [c.bar.start_ms for c in contexts]
        assert all(d.model_version == strategy.model_version for d in decisions)
        assert all(d.latency_us > 0 for d in decisions)
    assert strategy.last_rejections == []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        carry = strategy.carry_of(symbol)
        assert carry is not None
        assert carry.strategic_updates == 2


def test_strategic_updates_are_staggered_when_symbols_share_bars() -> None:
    """Each symbol updates every K bars at its own phase; no slice updates every symbol."""
    symbols = [f"S{i}USDT" for i in range(6)]
    assert len({strategic_phase(s, EVERY) for s in symbols}) > 1
    stream = Stream(walk_bars(symbols, 830))
    stream.warm()
    strategy = _strategy()
    ran: dict[str, list[int]] = {s: [] for s in symbols}
    for index in range(3 * EVERY):
        decisions = strategy.decide(stream.step())
        assert not all(d.strategic for d in decisions)
        for d in decisions:
            if d.strategic:
                ran[d.symbol].append(index)
                assert d.decision_type is DecisionType.STRATEGIC
            assert d.act_steps >= (1 if d.strategic or ran[d.symbol] else 0)
    for indices in ran.values():
        assert len(indices) == 3
        assert {b - a for a, b in itertools.pairwise(indices)} == {EVERY}


def test_same_seed_and_inputs_give_identical_decisions_when_replayed() -> None:
    """Two strategies built from one seed decide identically on identical streams."""
    runs = []
    for _ in range(2):
        strategy, stream = _strategy(), _pair()
        runs.append([without_latency(strategy.decide(stream.step())) for _ in range(25)])
    assert runs[0] == runs[1]
    assert any(d.act_steps for slice_ in runs[0] for d in slice_)


def test_carry_survives_restart_when_state_is_restored() -> None:
    """state_dict -> JSON -> a new strategy -> load gives the same next decisions and carry."""
    original, stream = _strategy(), _pair()
    for _ in range(EVERY + 3):
        original.decide(stream.step())
    saved = json.loads(json.dumps(original.state_dict()))
    restarted, cold = _strategy(), _strategy()
    restarted.load_state_dict(saved)
    twin = _pair()
    for _ in range(EVERY + 3):
        twin.step()
    cold_twin = _pair()
    for _ in range(EVERY + 3):
        cold_twin.step()
    for _ in range(EVERY):
        expected = without_latency(original.decide(stream.step()))
        assert without_latency(restarted.decide(twin.step())) == expected
        cold.decide(cold_twin.step())
    for symbol in ("BTCUSDT", "ETHUSDT"):
        a, b, c = (s.carry_of(symbol) for s in (original, restarted, cold))
        assert a is not None
        assert b is not None
        assert c is not None
        assert torch.equal(a.z_tactical, b.z_tactical)
        assert torch.equal(a.z_strategic, b.z_strategic)
        assert (a.bars, a.strategic_updates) == (b.bars, b.strategic_updates)
        assert not torch.equal(a.z_tactical, c.z_tactical)


def test_carry_from_another_model_is_discarded_when_loaded() -> None:
    """A saved carry of another model version is not applied to this model."""
    strategy, stream = _strategy(seed=2), _pair()
    for _ in range(EVERY + 1):
        strategy.decide(stream.step())
    other = _strategy(seed=3)
    other.load_state_dict(strategy.state_dict())
    assert other.carry_of("BTCUSDT") is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 50.0])
def test_bad_input_gives_hold_and_rejection_when_features_are_poisoned(value: float) -> None:
    """NaN, inf or out-of-range features give that symbol a HOLD and a rejection, not a trade."""
    strategy, stream = _strategy(), _pair()
    expected = "feature_out_of_range" if value == 50.0 else "feature_not_finite"
    rejected = 0
    for _ in range(2 * EVERY):
        contexts = stream.step()
        poisoned = [
            dataclasses.replace(c, features=PoisonedView(c.features, value))
            if c.bar.symbol == "ETHUSDT"
            else c
            for c in contexts
        ]
        decisions = strategy.decide(poisoned)
        eth = decisions[1]
        assert eth.action is Action.HOLD
        assert eth.decision_type is DecisionType.PROCEDURAL
        reasons = dict(strategy.last_rejections)
        if "ETHUSDT" in reasons:
            assert reasons["ETHUSDT"] == expected
            rejected += 1
        assert "BTCUSDT" not in reasons
    # Without a plan ETH reaches the input checks only on its strategic bars: 2 in 2 K bars.
    assert rejected == 2
    assert strategy.carry_of("ETHUSDT") is None
    assert strategy.carry_of("BTCUSDT") is not None
    assert strategy.halted_reason is None


class _ExplodingHRM(HRM):
    """An HRM whose forward fails, as a broken model or device would."""

    def infer(self, carry: HRMCarry, batch: FeatureBatch) -> Inference:
        raise RuntimeError("device lost")


def test_model_failure_holds_all_and_halts_when_forward_raises() -> None:
    """An exception in the model gives every symbol a HOLD and sets halted_reason, never raises."""
    healthy = fresh_model("hrm", preset="tiny", seed=2)
    broken = _ExplodingHRM(HRMConfig.preset("tiny"), seed=2).eval()
    strategy = HRMStrategy(LoadedModel(broken, healthy.meta), device="cpu", strategic_every=EVERY)
    stream = _pair()
    contexts: list[SymbolContext] = []
    while strategy.halted_reason is None:
        contexts = stream.step()
        decisions = strategy.decide(contexts)
        assert all(d.action is Action.HOLD for d in decisions)
    assert "device lost" in strategy.halted_reason
    assert len(strategy.decide(stream.step())) == len(contexts)


def test_flat_baseline_decides_every_bar_when_streaming() -> None:
    """The flat strategy runs on every ready bar, never marks decisions strategic."""
    strategy, stream = _strategy("flat"), _pair()
    decisions = [d for _ in range(5) for d in strategy.decide(stream.step())]
    assert strategy.name == "flat"
    assert all(d.act_steps == 1 and not d.strategic for d in decisions)


def test_model_failure_survives_restart_when_state_is_restored() -> None:
    """A strategy restored from a failed one's state HOLDs without running the model, so a
    resumed run decides what the uninterrupted one did."""
    healthy = fresh_model("hrm", preset="tiny", seed=2)
    broken = _ExplodingHRM(HRMConfig.preset("tiny"), seed=2).eval()
    failed = HRMStrategy(LoadedModel(broken, healthy.meta), device="cpu", strategic_every=EVERY)
    stream = _pair()
    while failed.halted_reason is None:
        failed.decide(stream.step())
    restored = HRMStrategy(healthy, device="cpu", strategic_every=EVERY)
    restored.load_state_dict(failed.state_dict())
    assert restored.halted_reason == failed.halted_reason
    decisions = [d for _ in range(2 * EVERY) for d in restored.decide(stream.step())]
    assert all(d.action is Action.HOLD and d.act_steps == 0 for d in decisions)
