"""Latency of HRM inference: the tactical step and the strategic update, 1/10/50 symbols batched.

Owns timing `HRM.infer` on real scaled feature windows (the BTCUSDT 5m series, one bar offset
per simulated symbol) for each preset: a tactical step (every bar: tactical window + account,
ACT segments) and a strategic update (fH cycles on the 256-bar window, then the tactical step),
both for all symbols of the batch at once, plus one end-to-end `HRMStrategy.decide` per slice
with real feature buffers and the staggered schedule. It prints p50/p99 in milliseconds, the
mean ACT segments, parameter counts and peak RSS (each preset in its own process, so the RSS is
that preset's). `--act worst` pins every row's confidence low, so every row runs the scaled
ACT budget: the latency ceiling. It must not assert on speed or run as part of the test suite.

Run from the repository root:
`PYTHONPATH=. .venv/bin/python bench/bench_hrm.py [--presets small base] [--symbols 1 10 50]
[--repeats 200] [--budget-s 20] [--threads 1] [--device cpu] [--act typical|worst]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _pipeline import run_child

from strategies.base import AccountState, SymbolContext
from strategies.hrm.checkpoint import fresh_model
from strategies.hrm.flat import FlatTransformer
from strategies.hrm.heads import ACTIONS, CONFIDENCE, FeatureBatch
from strategies.hrm.layers import instrument_bucket, timeframe_index
from strategies.hrm.model import HRM, HRMCarry, count_parameters
from strategies.hrm.strategy import HRMStrategy, autocast_for
from tests.support.candles import load_candles
from trader.domain import Bar
from trader.features.buffer import FeatureBuffer
from trader.features.dataset import build_feature_matrix

DATA = Path(__file__).parent / "data" / "BTCUSDT_5m.csv.gz"
ACCOUNT = AccountState(10_000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def _pin_low_confidence(model: HRM) -> None:
    """Every row unconfident: ACT runs `act_max_segments_scaled` segments (the ceiling)."""
    column = len(ACTIONS) + len(model.config.horizons) + CONFIDENCE
    with torch.no_grad():
        model.tactical_head.weight[column] = 0.0
        model.tactical_head.bias[column] = -10.0


def _timed(
    call: Callable[[], torch.Tensor], device: torch.device, *, repeats: int, budget_s: float
) -> tuple[list[float], list[float]]:
    """Milliseconds per call and mean ACT steps per call, after 5 warm-up calls."""
    for _ in range(5):
        call()
    times, steps = [], []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 20 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        act = call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter_ns() - start) / 1e6)
        steps.append(float(act.float().mean()))
    return times, steps


def _percentiles(times: list[float], steps: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "act_steps": statistics.fmean(steps),
        "n": len(ordered),
    }


def _model_latency(
    model: HRM, bars_scaled: np.ndarray, size: int, device: torch.device, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Tactical step and strategic update of `size` symbols (one bar offset per symbol)."""
    valid = bars_scaled.shape[0]
    offsets = np.linspace(0, valid // 2, size, dtype=np.int64)
    cursor = {"i": 0}
    carry = {"c": model.initial_carry(size)}
    instrument = torch.tensor(
        [instrument_bucket(f"S{j}USDT", model.config.instrument_buckets) for j in range(size)],
        device=device,
    )
    timeframe = torch.full((size,), timeframe_index("5"), device=device)

    def batch(strategic: bool) -> FeatureBatch:
        end = 256 + (cursor["i"] % (valid // 2 - 256)) + offsets  # (B,) window ends
        cursor["i"] += 1
        tac = np.stack([bars_scaled[e - 64 : e] for e in end])  # (B, 64, F)
        strat = np.stack([bars_scaled[e - 256 : e] for e in end]) if strategic else None
        return FeatureBatch(
            tactical=torch.from_numpy(tac).to(device),
            account=torch.zeros(size, 4, device=device),
            instrument=instrument,
            timeframe=timeframe,
            strategic=torch.from_numpy(strat).to(device) if strat is not None else None,
        )

    def step(strategic: bool) -> torch.Tensor:
        with torch.inference_mode(), autocast_for(device):
            result = model.infer(carry["c"], batch(strategic))
        carry["c"] = HRMCarry(result.carry.z_strategic.float(), result.carry.z_tactical.float())
        return result.act_steps

    out = {}
    for name, strategic in (("tactical", False), ("strategic", True)):
        times, steps = _timed(
            lambda s=strategic: step(s), device, repeats=args.repeats, budget_s=args.budget_s
        )
        out[name] = _percentiles(times, steps)
    return out


def _decide_latency(
    preset: str, bars: list[Bar], size: int, args: argparse.Namespace
) -> dict[str, float]:
    """End-to-end `decide` per slice: real buffers, staggered strategic updates, checks."""
    strategy = HRMStrategy(
        fresh_model("hrm", preset=preset, seed=0), device=args.device, strategic_every=16
    )
    if args.act == "worst" and isinstance(strategy.model, HRM):
        _pin_low_confidence(strategy.model)
    symbols = [f"S{j}USDT" for j in range(size)]
    buffers = {s: FeatureBuffer(interval="5", symbol=s) for s in symbols}
    warm = buffers[symbols[0]].warmup_bars
    for bar in bars[:warm]:
        for s in symbols:
            buffers[s].update(_renamed(bar, s))
    index = {"i": warm}

    def call() -> torch.Tensor:
        bar = bars[index["i"]]
        index["i"] += 1
        contexts = []
        for s in symbols:
            renamed = _renamed(bar, s)
            buffers[s].update(renamed)
            contexts.append(SymbolContext(renamed, buffers[s], ACCOUNT))
        decisions = strategy.decide(contexts)
        return torch.tensor([d.act_steps for d in decisions])

    # The first 16 slices are HOLDs without a plan for some symbols; skip them.
    for _ in range(16):
        call()
    repeats = min(args.repeats, len(bars) - index["i"] - 1)
    times, steps = _timed(call, torch.device("cpu"), repeats=repeats, budget_s=args.budget_s)
    return _percentiles(times, steps)


def _renamed(bar: Bar, symbol: str) -> Bar:
    return dataclasses.replace(bar, symbol=symbol)


def _worker(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = args.worker
    model = fresh_model("hrm", preset=preset, seed=0).model
    assert isinstance(model, HRM)
    model = model.to(device).eval()
    if args.act == "worst":
        _pin_low_confidence(model)
    bars = load_candles(DATA, "BTCUSDT", "5")
    matrix = build_feature_matrix(bars)
    scaled = np.ascontiguousarray(matrix.scaled[matrix.valid])  # (N, F) float32
    flat = fresh_model("flat", preset=preset, seed=0).model
    assert isinstance(flat, FlatTransformer)
    result: dict[str, object] = {
        "preset": preset,
        "device": str(device)
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "params_hrm": count_parameters(model),
        "params_flat": count_parameters(flat),
        "model": {},
        "decide": {},
    }
    del flat
    for size in args.symbols:
        result["model"][size] = _model_latency(model, scaled, size, device, args)  # type: ignore[index]
        if not args.skip_decide:
            result["decide"][size] = _decide_latency(preset, bars, size, args)  # type: ignore[index]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _print(results: list[dict[str, object]]) -> None:
    print(
        "| preset | device | symbols | tactical p50 / p99 ms | strategic p50 / p99 ms | "
        "tactical ACT | decide p50 / p99 ms | strategic / tactical p50 | tactical p50 / "
        "1 symbol |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        models: dict[str, dict[str, dict[str, float]]] = r["model"]  # type: ignore[assignment]
        decides: dict[str, dict[str, float]] = r["decide"]  # type: ignore[assignment]
        first = next(iter(models.values()))["tactical"]["p50_ms"]
        for size, m in models.items():
            tac, strat = m["tactical"], m["strategic"]
            d = decides.get(size)
            decide = f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}" if d else "-"
            print(
                f"| {r['preset']} | {r['device']} | {size} | {tac['p50_ms']:.2f} / "
                f"{tac['p99_ms']:.2f} | {strat['p50_ms']:.2f} / {strat['p99_ms']:.2f} | "
                f"{tac['act_steps']:.2f} | {decide} | {strat['p50_ms'] / tac['p50_ms']:.1f}x | "
                f"{tac['p50_ms'] / first:.1f}x |"
            )
    print()
    for r in results:
        print(
            f"{r['preset']}: HRM {r['params_hrm']:,} params, flat {r['params_flat']:,} params, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, {r['threads']} thread(s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--symbols", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--budget-s", type=float, default=20.0, help="time cap per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--act", choices=["typical", "worst"], default="typical")
    parser.add_argument("--skip-decide", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    results = []
    for preset in args.presets:
        results.append(run_child(__file__, "--worker", preset, *_passthrough(args)))
    _print(results)


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = [
        "--symbols",
        *map(str, args.symbols),
        "--repeats",
        str(args.repeats),
        "--budget-s",
        str(args.budget_s),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--act",
        args.act,
    ]
    return out + (["--skip-decide"] if args.skip_decide else [])


if __name__ == "__main__":
    main()
