"""Streaming inference: the HRM (or the flat baseline) as a `Strategy` over bar-close slices.

Owns the per-symbol carry (z_H, z_L and counters) and its JSON round trip, the staggered
strategic schedule, one batched forward per slice on the chosen device, and the safety rules:
bad input gives that symbol a HOLD and a rejection, any model failure gives every symbol a HOLD
and halts the strategy with a reason. It must not do I/O, read the clock for anything but its
own latency, or size orders beyond `Decision.size` (risk does that).

Two attributes report to the engine after each `decide`:

- `last_rejections`: `(symbol, reason)` for every context whose inputs were refused on this
  call (cleared at the start of each call); each is a risk event for the engine to record.
- `halted_reason`: None while healthy; once the model has failed, the reason, and every later
  decision is a HOLD until a new strategy is built (a restart).

An optional `on_outputs` callback receives an `OutputRecord` per symbol the model ran for
(evaluation collects prediction metrics and ACT statistics from the very run it trades).

Schedule: a symbol runs the strategic module on the bars where
`(start_ms // interval_ms + phase(symbol)) % strategic_every == 0`, with `phase` a stable hash of
the symbol. It depends only on the bar and the symbol, so replay, live and a restart agree, and
symbols are spread over the K bars instead of all updating on one slice. Until a symbol's first
strategic update it has no plan and HOLDs without running the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import torch
from torch import Tensor

from strategies.base import SymbolContext
from strategies.hrm.checkpoint import LoadedModel
from strategies.hrm.heads import ACTIONS, OUTPUT_FIELDS, HRMOutputs
from strategies.hrm.inputs import InputRejected, SymbolInputs, read_inputs, stack_batch
from strategies.hrm.model import HRMCarry
from strategies.hrm.policy import DecisionContext, PolicySettings, SymbolOutputs, to_decision
from trader.domain import INTERVAL_MS, Decision

STATE_FORMAT = 1
_log = structlog.get_logger(__name__)


@functools.cache
def strategic_phase(symbol: str, strategic_every: int) -> int:
    """The stable offset of a symbol in the strategic schedule, in [0, strategic_every)."""
    digest = hashlib.blake2b(symbol.encode("utf-8"), digest_size=8, person=b"hrm-phase").digest()
    return int.from_bytes(digest, "big") % strategic_every


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; `cpu` as given, `cuda` pinned to the current
    device's index."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and torch.cuda.is_available():
        # With its index: tensors cached per device (the batch's index tensors) then stay on
        # the GPU the model is on, whatever the current device is later.
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """How the model runs on `device`: bfloat16 autocast on CUDA, as it is on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """What the model said for one symbol on one bar; returns as log returns (not ATR)."""

    symbol: str
    bar_start_ms: int
    expected_return: float  # the next-bar return head
    up_probability: float
    confidence: float
    act_steps: int
    strategic: bool


def output_table(out: HRMOutputs) -> tuple[Tensor, dict[str, int]]:
    """Every head side by side as one (B, C) float32 CPU tensor, and each head's first column.

    One tensor instead of thirteen: the streaming path moves it to the CPU, checks it for
    non-finite values and turns it into Python floats with one call each. Done per head, those
    ~40 small tensor calls cost about 0.1 ms per slice on a CPU (a sixth of a tactical step).
    """
    tensors = out.tensors()
    starts: dict[str, int] = {}
    column = 0
    for name, tensor in zip(OUTPUT_FIELDS, tensors, strict=True):
        starts[name] = column
        column += 1 if tensor.dim() == 1 else tensor.shape[1]
    return torch.column_stack(tensors).float().cpu(), starts  # (B, C)


def row_outputs(
    table: Tensor,
    values: list[float],
    j: int,
    starts: dict[str, int],
    *,
    atr_relative: float,
    horizons: tuple[int, ...],
    horizon_bars: int,
) -> SymbolOutputs:
    """Row j of an `output_table` (`values` is that row as floats) as `SymbolOutputs`.

    The same conversions as converting each head's tensor element: float32 values widened to
    float, the first maximal action logit (torch's argmax tie rule), and the up probability
    from torch's sigmoid of the 0-d element, so decisions are bit for bit those of the heads.
    """
    logits = values[starts["action_logits"] : starts["action_logits"] + len(ACTIONS)]
    if horizon_bars == 1 or horizon_bars not in horizons:
        in_atr = values[starts["next_return"]]
    else:
        in_atr = values[starts["horizon_returns"] + horizons.index(horizon_bars)]
    return SymbolOutputs(
        action=ACTIONS[logits.index(max(logits))],
        size=values[starts["size"]],
        confidence=values[starts["confidence"]],
        stop_loss_atr=values[starts["stop_loss_atr"]],
        take_profit_atr=values[starts["take_profit_atr"]],
        expected_return=in_atr * atr_relative,
        up_probability=float(torch.sigmoid(table[j, starts["direction_logit"]])),
        risk_budget=values[starts["risk_budget"]],
    )


@dataclass(slots=True)
class SymbolCarry:
    """One symbol's recurrent state and counters (persisted with the run)."""

    z_strategic: Tensor  # (P_H, D_H) float32
    z_tactical: Tensor  # (P_L, D_L) float32
    bars: int = 0  # bars the model ran for this symbol
    strategic_updates: int = 0
    last_strategic_ms: int | None = None


class HRMStrategy:
    """Decides every symbol of a slice in one batched forward; see the module docstring.

    Args:
        loaded: the model (any device; it is moved) and its checkpoint description.
        device: `auto`, `cpu` or `cuda`.
        strategic_every: bars between strategic updates of one symbol (10..20).
        policy: thresholds of the outputs-to-decision rule.
        num_threads: CPU threads for torch (process-wide); None keeps torch's setting.
        on_outputs: called after each model run with one record per symbol it ran for.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        device: str = "auto",
        strategic_every: int = 16,
        policy: PolicySettings | None = None,
        num_threads: int | None = None,
        on_outputs: Callable[[list[OutputRecord]], None] | None = None,
    ) -> None:
        if not 1 <= strategic_every <= 1_000:
            raise ValueError(f"strategic_every must be a positive bar count, got {strategic_every}")
        self.device = resolve_device(device)
        if num_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(num_threads)
        self.model = loaded.model.to(self.device).eval()
        self.meta = loaded.meta
        self.name: str = loaded.meta.kind
        self.model_version: str = loaded.meta.model_version
        self.strategic_every = strategic_every
        self.policy = policy if policy is not None else PolicySettings()
        self.last_rejections: list[tuple[str, str]] = []
        self.halted_reason: str | None = None
        self._hierarchical = not self.model.needs_strategic_every_bar
        self._carry: dict[str, SymbolCarry] = {}
        self._on_outputs = on_outputs

    # -- deciding ---------------------------------------------------------------------------

    def decide(self, contexts: Sequence[SymbolContext]) -> list[Decision]:
        """One Decision per context, in order; never raises for bad input or model failure."""
        started_ns = time.perf_counter_ns()
        self.last_rejections = []
        decided: dict[int, Decision] = {}
        if self.halted_reason is None:
            rows = self._checked_rows(contexts)
            if rows:
                try:
                    decided = self._run(contexts, rows)
                except Exception as exc:  # the model's boundary: any failure halts, never crashes
                    self.halted_reason = f"model failed: {type(exc).__name__}: {exc}"
                    _log.exception("hrm_model_failed", reason=self.halted_reason)
        latency_us = (time.perf_counter_ns() - started_ns) // 1_000
        # Every context the model did not decide for (all of them after a failure) HOLDs.
        return [
            dataclasses.replace(decided.get(i) or self._hold(c), latency_us=latency_us)
            for i, c in enumerate(contexts)
        ]

    def _hold(self, context: SymbolContext) -> Decision:
        bar = context.bar
        return Decision.hold(bar.symbol, bar.start_ms, model_version=self.model_version)

    def _due(self, context: SymbolContext) -> bool:
        if not self._hierarchical:
            return True
        bar = context.bar
        every = self.strategic_every
        bar_index = bar.start_ms // INTERVAL_MS[bar.interval]
        return (bar_index + strategic_phase(bar.symbol, every)) % every == 0

    def _checked_rows(
        self, contexts: Sequence[SymbolContext]
    ) -> list[tuple[int, SymbolInputs, bool]]:
        """(index, inputs, strategic) of the contexts the model runs for on this call."""
        rows: list[tuple[int, SymbolInputs, bool]] = []
        seen: set[str] = set()
        for i, context in enumerate(contexts):
            symbol = context.bar.symbol
            try:
                if symbol in seen:
                    raise InputRejected("duplicate_symbol")
                if context.bar.interval not in INTERVAL_MS:
                    raise InputRejected("interval_unknown")
                seen.add(symbol)
                due = self._due(context)
                carry = self._carry.get(symbol)
                if self._hierarchical and not due and (carry is None or not carry.bars):
                    continue  # no plan yet: HOLD until the symbol's first strategic bar
                inputs = read_inputs(
                    context,
                    n_features=self.model.config.n_features,
                    clip=self.meta.feature_clip,
                    with_strategic=due,
                )
            except InputRejected as rejected:
                self.last_rejections.append((symbol, rejected.reason))
                continue
            rows.append((i, inputs, due))
        return rows

    def _run(
        self, contexts: Sequence[SymbolContext], rows: list[tuple[int, SymbolInputs, bool]]
    ) -> dict[int, Decision]:
        """The batched forward for the checked rows, their carries updated, their decisions."""
        picked = [contexts[i] for i, _, _ in rows]
        symbols = [c.bar.symbol for c in picked]
        batch = stack_batch(
            symbols,
            [c.bar.interval for c in picked],
            [inputs for _, inputs, _ in rows],
            [j for j, (_, _, due) in enumerate(rows) if due],
            instrument_buckets=self.model.config.instrument_buckets,
            device=self.device,
        )
        carries = [self._carry_of(s) for s in symbols]
        carry = HRMCarry(
            torch.stack([c.z_strategic for c in carries]),  # (B, P_H, D_H)
            torch.stack([c.z_tactical for c in carries]),  # (B, P_L, D_L)
        )
        with torch.inference_mode(), autocast_for(self.device):
            result = self.model.infer(carry, batch)
            table, starts = output_table(result.outputs)  # (B, C) on the CPU
        values = table.tolist()
        # Any NaN or infinity makes the sum non-finite, and float32 values cannot overflow a
        # float sum of this size: the same test as torch.isfinite(table).all(), ~10x cheaper.
        if not math.isfinite(sum(map(sum, values))):
            raise FloatingPointError("the model produced non-finite outputs")
        z_h = result.carry.z_strategic.float()
        z_l = result.carry.z_tactical.float()
        steps = result.act_steps.tolist()
        decided: dict[int, Decision] = {}
        updated: dict[str, SymbolCarry] = {}
        read: list[SymbolOutputs] = []  # each row's outputs, for `on_outputs`
        for j, ((i, inputs, due), context) in enumerate(zip(rows, picked, strict=True)):
            strategic = due and self._hierarchical
            before = carries[j]
            updated[context.bar.symbol] = SymbolCarry(
                z_strategic=z_h[j].clone(),
                z_tactical=z_l[j].clone(),
                bars=before.bars + 1,
                strategic_updates=before.strategic_updates + int(strategic),
                last_strategic_ms=context.bar.start_ms if strategic else before.last_strategic_ms,
            )
            outputs = row_outputs(
                table,
                values[j],
                j,
                starts,
                atr_relative=inputs.atr_relative,
                horizons=self.model.config.horizons,
                horizon_bars=self.policy.horizon_bars,
            )
            read.append(outputs)
            decided[i] = to_decision(
                outputs,
                DecisionContext(
                    bar=context.bar,
                    account=context.account,
                    atr=inputs.atr,
                    strategic=strategic,
                    act_steps=int(steps[j]),
                    model_version=self.model_version,
                ),
                policy_trained=self.meta.policy_trained,
                settings=self.policy,
            )
        self._carry.update(updated)  # only once every row has decided: a failure changes nothing
        if self._on_outputs is not None:
            self._on_outputs(self._records(values, starts, read, rows, picked, steps))
        return decided

    def _records(
        self,
        values: list[list[float]],
        starts: dict[str, int],
        read: list[SymbolOutputs],
        rows: list[tuple[int, SymbolInputs, bool]],
        picked: list[SymbolContext],
        steps: list[int],
    ) -> list[OutputRecord]:
        """One record per row; the return is the next-bar head's (whatever horizon decides)."""
        next_return = starts["next_return"]
        return [
            OutputRecord(
                symbol=context.bar.symbol,
                bar_start_ms=context.bar.start_ms,
                expected_return=values[j][next_return] * inputs.atr_relative,
                up_probability=outputs.up_probability,
                confidence=outputs.confidence,
                act_steps=int(steps[j]),
                strategic=due and self._hierarchical,
            )
            for j, ((_, inputs, due), context, outputs) in enumerate(
                zip(rows, picked, read, strict=True)
            )
        ]

    def _carry_of(self, symbol: str) -> SymbolCarry:
        carry = self._carry.get(symbol)
        if carry is None:
            fresh = self.model.initial_carry(1)
            carry = SymbolCarry(
                fresh.z_strategic[0].to(self.device, torch.float32),
                fresh.z_tactical[0].to(self.device, torch.float32),
            )
        return carry

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Per-symbol carries (tensors as nested lists of floats, exact) and counters."""
        return {
            "format": STATE_FORMAT,
            "model_version": self.model_version,
            "strategic_every": self.strategic_every,
            # A failed model stays failed across a restart: a resumed run must HOLD where the
            # uninterrupted one did, not run the model again.
            "halted_reason": self.halted_reason,
            "symbols": {
                symbol: {
                    "z_strategic": carry.z_strategic.cpu().tolist(),
                    "z_tactical": carry.z_tactical.cpu().tolist(),
                    "bars": carry.bars,
                    "strategic_updates": carry.strategic_updates,
                    "last_strategic_ms": carry.last_strategic_ms,
                }
                for symbol, carry in sorted(self._carry.items())
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; a carry saved by another model is discarded."""
        self._carry = {}
        self.halted_reason = state.get("halted_reason")  # absent in older snapshots
        if state.get("model_version") != self.model_version:
            _log.warning(
                "hrm_carry_discarded",
                saved=state.get("model_version"),
                running=self.model_version,
            )
            return
        for symbol, saved in state["symbols"].items():
            self._carry[str(symbol)] = SymbolCarry(
                z_strategic=_tensor(saved["z_strategic"], self.device),
                z_tactical=_tensor(saved["z_tactical"], self.device),
                bars=int(saved["bars"]),
                strategic_updates=int(saved["strategic_updates"]),
                last_strategic_ms=saved["last_strategic_ms"],
            )

    def carry_of(self, symbol: str) -> SymbolCarry | None:
        """The carry of a symbol, None before its first model run (for tests and reports)."""
        return self._carry.get(symbol)


def _tensor(values: list[Any], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)
