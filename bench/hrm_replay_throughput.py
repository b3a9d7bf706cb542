"""Replay throughput with the HRM against the model's own forward throughput (issue 4).

The target: a replay with the `hrm` strategy runs at >= 90% of the throughput of the model
calls it makes, i.e. the pipeline adds at most ~10%. On the real BTCUSDT 5m series (25,920
bars), the `small` preset from the shipped checkpoint, CPU. Modes, each run in its own process:

  replay      the full pipeline (engine, paper broker, risk, rewards, SQLite writer) with the
              strategy `hrm` built exactly as `trader replay` builds it, bars already in memory;
              start-up (imports, checkpoint load, database creation) excluded, the clock stops
              when the writer has committed the last batch.
  model_only  the very sequence of `HRM.infer` calls that replay makes for the symbol: the same
              bars, the same strategic schedule, batch size 1, the same ACT settings, the same
              carry hand-over, under `torch.inference_mode`, with the torch threads the strategy
              sets. Its inputs are built before the clock starts with the strategy's own code
              (`FeatureBuffer` windows, `read_inputs`, `stack_batch`), with the account state the
              engine gave the strategy on each bar; only the forward calls are timed.

The account state, and so the exact call sequence, comes from one untimed `capture` replay
(its `decide` wrapped to record every context and decision); every model_only run checks that
it reproduced each call's ACT segments and the final carry bit for bit. Rounds alternate the two
modes (replay, then model_only; each a fresh process), so a drift of the shared host's speed
hits both; each process first runs a short untimed warm-up. Both rates are the series' bar count
over the measured seconds, so their ratio is model_only time / replay time. Prints medians, the
ratio of the medians, the median of the per-round ratios and peak RSS per mode. It must not
assert on speed or run as part of the test suite.

Run from the repository root (the default, the full series with 3 rounds, takes about 4 min on
the project's 2-core VM; `--bars 6000` gives a rough figure in about 80 s):

    PYTHONPATH=. .venv/bin/python bench/hrm_replay_throughput.py [--runs 3] [--bars 0]
        [--data bench/data/BTCUSDT_5m.csv.gz]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _pipeline import DEFAULT_DATA, load_bars, run_child, timed_run

#: Untimed warm-up before a timed run: pipeline bars (enough for ~400 model calls after the
#: default 782-bar feature warm-up) and model calls.
WARMUP_BARS = 1_200
WARMUP_CALLS = 400


def _settings() -> Any:
    """The settings both modes build the strategy from (the defaults, strategy `hrm`)."""
    from trader.config import Settings

    return Settings(strategy={"name": "hrm"})


def _pipeline_run(bars: Sequence[Any], db_path: Path, instance: Any = None) -> float:
    """Seconds for the bars through the `hrm` pipeline, until the writer has committed them all."""
    return asyncio.run(timed_run(db_path, "hrm", ([bar] for bar in bars), instance=instance))


def _recording(strategy: Any, calls: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """`strategy.decide` that also appends one record per model call (act_steps > 0)."""
    inner = strategy.decide

    def decide(contexts: Sequence[Any]) -> Any:
        decisions = inner(contexts)
        for context, decision in zip(contexts, decisions, strict=True):
            if decision.act_steps > 0:
                calls.append(
                    {
                        "start_ms": context.bar.start_ms,
                        "account": [float(v) for v in dataclasses.astuple(context.account)],
                        "act_steps": decision.act_steps,
                        "strategic": decision.strategic,
                    }
                )
        return decisions

    return decide


def capture(bars: Sequence[Any], out: Path) -> dict[str, Any]:
    """One untimed replay that records the model's call sequence to `out` (.npz)."""
    from trader.pipeline import build_strategy_from

    strategy = build_strategy_from(_settings())
    calls: list[dict[str, Any]] = []
    strategy.decide = _recording(strategy, calls)  # an instance attribute: the engine calls it
    with tempfile.TemporaryDirectory() as tmp:
        seconds = _pipeline_run(bars, Path(tmp) / "capture.db", strategy)
    symbol = bars[0].symbol
    carry = strategy.carry_of(symbol)
    np.savez(
        out,
        start_ms=np.array([c["start_ms"] for c in calls], dtype=np.int64),
        account=np.array([c["account"] for c in calls], dtype=np.float64),
        act_steps=np.array([c["act_steps"] for c in calls], dtype=np.int64),
        strategic=np.array([c["strategic"] for c in calls], dtype=bool),
        z_strategic=carry.z_strategic.numpy(),
        z_tactical=carry.z_tactical.numpy(),
    )
    return {"mode": "capture", "bars": len(bars), "calls": len(calls), "seconds": [seconds]}


def replay_child(bars: Sequence[Any]) -> dict[str, Any]:
    """A warm-up replay of the first bars, then one timed replay of them all."""
    with tempfile.TemporaryDirectory() as tmp:
        _pipeline_run(bars[:WARMUP_BARS], Path(tmp) / "warmup.db")
        seconds = _pipeline_run(bars, Path(tmp) / "bench.db")
    return {"mode": "replay", "bars": len(bars), "seconds": [seconds]}


def _prepare(bars: Sequence[Any], strategy: Any, recorded: Any) -> list[Any]:
    """The FeatureBatch of every recorded call, built by the strategy's own input code.

    Windows overlap from bar to bar, so instead of one copy per call (about 250 MB for the
    series) each batch views one array of scaled rows; every window the strategy's code returns
    is checked to equal the rows already stored, so the views are exactly its inputs.
    """
    import torch

    from strategies.base import AccountState, SymbolContext
    from strategies.hrm.inputs import read_inputs, stack_batch
    from trader.features.buffer import FeatureBuffer

    features = _settings().features
    model = strategy.model
    buffer = FeatureBuffer(
        interval=bars[0].interval,
        symbol=bars[0].symbol,
        tactical_window=features.tactical_window,
        strategic_window=features.strategic_window,
        scale_window=features.scale_window,
        clip=features.clip,
    )
    n_features = model.config.n_features
    rows = np.zeros((len(bars), n_features), dtype=np.float32)  # scaled row of each bar
    filled = np.zeros(len(bars), dtype=bool)
    by_start = {int(ms): k for k, ms in enumerate(recorded["start_ms"])}
    accounts = recorded["account"]
    shared: dict[str, Any] = {}
    batches: list[Any] = []

    def view(end: int, window: np.ndarray) -> Any:
        lo = end + 1 - window.shape[0]
        seen = filled[lo : end + 1]
        if not np.array_equal(rows[lo : end + 1][seen], window[seen]):
            raise RuntimeError(f"a scaled row changed between windows at bar {end}")
        rows[lo : end + 1] = window
        filled[lo : end + 1] = True
        return torch.from_numpy(rows[lo : end + 1]).unsqueeze(0)  # (1, T, F), a view

    for index, bar in enumerate(bars):
        buffer.update(bar)
        k = by_start.get(bar.start_ms)
        if k is None:
            continue
        strategic = bool(recorded["strategic"][k])
        values = accounts[k]
        account = AccountState(*map(float, values[:-1]), int(values[-1]))
        inputs = read_inputs(
            SymbolContext(bar, buffer, account),
            n_features=n_features,
            clip=strategy.meta.feature_clip,
            with_strategic=strategic,
        )
        batch = stack_batch(
            [bar.symbol],
            [bar.interval],
            [inputs],
            [0] if strategic else [],
            instrument_buckets=model.config.instrument_buckets,
            device=strategy.device,
        )
        # The strategic-row index of every strategic call is one shared tensor, again only to keep
        # RSS the model's (`stack_batch` already shares the instrument and timeframe tensors).
        if batch.strategic_rows is not None:
            rows_index = shared.setdefault("strategic_rows", batch.strategic_rows)
            assert torch.equal(rows_index, batch.strategic_rows)
            batch = dataclasses.replace(batch, strategic_rows=rows_index)
        batches.append(
            dataclasses.replace(
                batch,
                tactical=view(index, inputs.tactical),
                strategic=view(index, inputs.strategic) if strategic else None,
            )
        )
    if len(batches) != len(accounts):
        raise RuntimeError(f"prepared {len(batches)} of {len(accounts)} recorded calls")
    return batches


def _forward(strategy: Any, batches: Sequence[Any]) -> tuple[float, list[Any], Any]:
    """Seconds for the calls as the strategy makes them; each call's ACT steps; last carry."""
    import torch

    from strategies.hrm.model import HRMCarry
    from strategies.hrm.strategy import autocast_for

    model = strategy.model
    carry = model.initial_carry(1)
    steps = []
    started = time.perf_counter()
    for batch in batches:
        with torch.inference_mode(), autocast_for(strategy.device):
            result = model.infer(carry, batch)
        # As the strategy stores it between bars (float32; the stack of one row is a copy).
        carry = HRMCarry(result.carry.z_strategic.float(), result.carry.z_tactical.float())
        steps.append(result.act_steps)
    return time.perf_counter() - started, steps, carry


def model_child(bars: Sequence[Any], recorded_path: Path) -> dict[str, Any]:
    """A warm-up of the first calls, then the recorded call sequence timed once."""
    import torch

    from trader.pipeline import build_strategy_from

    strategy = build_strategy_from(_settings())  # same checkpoint, device and torch threads
    recorded = dict(np.load(recorded_path))
    batches = _prepare(bars, strategy, recorded)
    _forward(strategy, batches[:WARMUP_CALLS])
    seconds, steps, carry = _forward(strategy, batches)
    identical = (
        torch.cat(steps).tolist() == recorded["act_steps"].tolist()
        and np.array_equal(carry.z_strategic[0].numpy(), recorded["z_strategic"])
        and np.array_equal(carry.z_tactical[0].numpy(), recorded["z_tactical"])
    )
    return {
        "mode": "model_only",
        "bars": len(bars),
        "calls": len(batches),
        "strategic_calls": int(recorded["strategic"].sum()),
        "act_steps_mean": float(recorded["act_steps"].mean()),
        "identical": identical,
        "threads": torch.get_num_threads(),
        "seconds": [seconds],
    }


def child(args: argparse.Namespace) -> None:
    """Run one mode once in this process and print its result as a JSON line."""
    from trader.logs import configure_logging

    configure_logging("WARNING", "json")
    bars = load_bars(args.data, args.bars)
    if args.mode == "capture":
        result = capture(bars, args.recorded)
    elif args.mode == "replay":
        result = replay_child(bars)
    else:
        result = model_child(bars, args.recorded)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _spawn(mode: str, args: argparse.Namespace, recorded: Path) -> dict[str, Any]:
    return run_child(
        __file__,
        *("--mode", mode, "--bars", str(args.bars)),
        *("--data", str(args.data), "--recorded", str(recorded)),
    )


def main() -> None:
    """Capture once, then alternate replay and model_only rounds; print the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds (one run of each mode)")
    parser.add_argument("--bars", type=int, default=0, help="first N bars only (0: all)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--mode", choices=("capture", "replay", "model_only"), help="internal")
    parser.add_argument("--recorded", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        recorded = Path(tmp) / "calls.npz"
        captured = _spawn("capture", args, recorded)
        results: dict[str, list[dict[str, Any]]] = {"replay": [], "model_only": []}
        for _ in range(args.runs):
            for mode in ("replay", "model_only"):
                results[mode].append(_spawn(mode, args, recorded))
    _report(args, captured, results)


def _report(
    args: argparse.Namespace, captured: dict[str, Any], results: dict[str, list[dict[str, Any]]]
) -> None:
    bars = captured["bars"]
    model = results["model_only"][0]
    print(
        f"HRM replay throughput, {args.runs} rounds, {bars:,} bars of {args.data.name}: "
        f"{model['calls']:,} model calls ({model['strategic_calls']:,} strategic, mean ACT "
        f"segments {model['act_steps_mean']:.2f}), {model['threads']} torch thread(s)"
    )
    print(f"{'mode':<11} {'median s':>9} {'bars/s':>9} {'runs bars/s':>26} {'peak RSS MB':>12}")
    rates = {}
    for mode, runs in results.items():
        seconds = [r["seconds"][0] for r in runs]
        rates[mode] = bars / statistics.median(seconds)
        each = ", ".join(f"{bars / s:,.0f}" for s in seconds)
        peak = max(r["peak_rss_mb"] for r in runs)
        print(
            f"{mode:<11} {statistics.median(seconds):>9.2f} {rates[mode]:>9,.0f} {each:>26} "
            f"{peak:>12.0f}"
        )
    per_round = [
        m["seconds"][0] / r["seconds"][0]
        for r, m in zip(results["replay"], results["model_only"], strict=True)
    ]
    print(f"replay / model_only (ratio of medians): {rates['replay'] / rates['model_only']:.3f}")
    print(
        f"replay / model_only per round: {', '.join(f'{x:.3f}' for x in per_round)} "
        f"(median {statistics.median(per_round):.3f}); target >= 0.90"
    )
    capture_s, capture_rss = captured["seconds"][0], captured["peak_rss_mb"]
    print(f"capture replay (untimed): {capture_s:.2f} s, peak RSS {capture_rss:.0f} MB")
    if not all(r["identical"] for r in results["model_only"]):
        print("WARNING: model_only did not reproduce the replay's calls bit for bit")


if __name__ == "__main__":
    main()
