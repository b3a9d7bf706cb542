"""Builds an engine and its stages from the settings tree.

Owns the wiring of one run's components (strategy, risk layer, paper broker, portfolio, rewards,
feature book) from their settings sections; the replay runner and the daemon both call it, so
replay and live run the very same pipeline. It must not start tasks or open connections.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from risk.layer import RiskLayer
from risk.limits import RiskLimits, limit_names
from strategies.base import Strategy
from strategies.hicra import HicraWeights
from strategies.registry import build_strategy
from trader.broker.paper import PaperBroker
from trader.config import DatabaseSettings, FeedSettings, Settings
from trader.engine import BatchSink, Engine, EventPublisher, FlushPolicy
from trader.features.buffer import FeatureBook
from trader.features.schema import schema_hash_of
from trader.feeds.backoff import Backoff
from trader.feeds.bybit_ws import BybitKlineFeed
from trader.instruments import InstrumentBook
from trader.persistence.database import is_file_sqlite
from trader.persistence.writer import BatchWriter
from trader.portfolio import Portfolio
from trader.replay.rejections import RejectionCounter
from trader.rewards import RewardTracker

#: GIL switch interval (s) while a SQLite writer thread shares the process with the engine.
WRITER_SWITCH_INTERVAL_S = 0.001


def build_writer(
    db: AsyncEngine,
    section: DatabaseSettings,
    *,
    replay: bool = False,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> BatchWriter:
    """The single batching writer, configured from the `[database]` section.

    Live, a SQLite file commits on the writer's own thread, so the loop keeps serving the
    websocket while a slice commits. CPython hands the GIL to a waiting thread only every
    `sys.getswitchinterval()` (5 ms by default), and the writer needs it back a few dozen times
    per batch, so 1 ms keeps its commits prompt. This is a process-wide setting, which is why
    the composition root makes it and not the writer.

    A replay (`replay=True`) commits SQLite on the loop's own thread: nothing else needs the
    loop meanwhile, and that measured faster than a writer thread on the 2-vCPU VM
    (bench/replay_throughput.py).

    `on_fatal` hears once when the writer fails for good (the daemon halts trading on it).
    """
    if is_file_sqlite(db) and not replay:
        sys.setswitchinterval(min(sys.getswitchinterval(), WRITER_SWITCH_INTERVAL_S))
    return BatchWriter(
        db,
        queue_max_batches=section.queue_max_batches,
        retry_attempts=section.write_retry_attempts,
        retry_backoff_s=section.write_retry_backoff_s,
        enqueue_timeout_s=section.enqueue_timeout_s,
        sqlite_on_loop_thread=replay,
        on_fatal=on_fatal,
    )


def build_feed(
    section: FeedSettings,
    *,
    backoff: Backoff,
    wall_ms: Callable[[], int],
    on_frame: Callable[[int, str], None] | None = None,
) -> BybitKlineFeed:
    """The Bybit kline feed for the `[feed]` section (its rejections counted on the feed).

    Args:
        section: the `[feed]` settings.
        backoff: reconnect delays.
        wall_ms: epoch milliseconds for each frame's `recv_ts`.
        on_frame: called with every received text frame (the recorder).
    """
    return BybitKlineFeed(
        ws_url=section.ws_url,
        symbols=section.symbols,
        interval=section.interval,
        ping_interval_s=section.ping_interval_s,
        ping_timeout_s=section.ping_timeout_s,
        staleness_s=section.staleness_s,
        backoff=backoff,
        rejections=RejectionCounter(),
        queue_maxsize=section.event_queue_size,
        on_frame=on_frame,
        wall_ms=wall_ms,
    )


def build_strategy_from(settings: Settings) -> Strategy:
    """The strategy `strategy.name` selects."""
    section, model, features = settings.strategy, settings.model, settings.features
    return build_strategy(
        section.name,
        seed=section.seed,
        ema_fast=section.ema_fast,
        ema_slow=section.ema_slow,
        checkpoint=model.checkpoint,
        device=model.device,
        strategic_every=model.strategic_every,
        # A checkpoint trained on other features or windows is refused (ConfigError).
        schema_hash=schema_hash_of(features),
        feature_clip=features.clip,
        # The model's forecast rule weighs predicted returns against the fees this run pays.
        taker_fee=settings.broker.taker_fee,
    )


def build_risk(settings: Settings) -> RiskLayer:
    """The risk layer for the `[risk]` section (its keys named like `RiskLimits` fields)."""
    return RiskLayer(RiskLimits(**settings.risk.model_dump(include=set(limit_names()))))


def build_engine(
    settings: Settings,
    *,
    run_id: str,
    sink: BatchSink,
    publisher: EventPublisher | None = None,
    strategy: Strategy | None = None,
) -> Engine:
    """Wire a fresh engine for `run_id` (state is loaded separately when resuming)."""
    instruments = InstrumentBook()
    broker_cfg = settings.broker
    features = settings.features
    rewards = settings.rewards
    return Engine(
        run_id=run_id,
        strategy=strategy if strategy is not None else build_strategy_from(settings),
        risk=build_risk(settings),
        broker=PaperBroker(
            run_id=run_id,
            taker_fee=Decimal(repr(broker_cfg.taker_fee)),
            slippage_bps=Decimal(repr(broker_cfg.slippage_bps)),
            instruments=instruments,
        ),
        portfolio=Portfolio(Decimal(repr(broker_cfg.initial_equity))),
        rewards=RewardTracker(
            HicraWeights(
                strategic=rewards.strategic_weight,
                tactical=rewards.tactical_weight,
                procedural=rewards.procedural_weight,
            )
        ),
        features=FeatureBook(
            tactical_window=features.tactical_window,
            strategic_window=features.strategic_window,
            scale_window=features.scale_window,
            clip=features.clip,
        ),
        instruments=instruments,
        sink=sink,
        publisher=publisher,
        flush_policy=FlushPolicy(
            max_rows=settings.database.flush_max_rows,
            interval_ms=settings.database.flush_interval_ms,
        ),
        max_bar_age_ms=round(settings.risk.max_bar_age_s * 1_000),
    )
