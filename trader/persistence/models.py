"""The database schema, declared once as SQLAlchemy 2 typed ORM classes.

Owns the table, column, index and constraint definitions that `migrations/` is generated from,
and the metadata naming convention that gives every constraint a stable name (so migrations can
alter or drop them on every dialect). It must not hold trading maths, sessions or engines: DB
handles are passed to `writer` and `repository` explicitly, and runtime code never calls
`create_all` (the schema comes from Alembic only).

Units follow the contract: prices and money are `Float` (double precision), times are epoch
milliseconds in `BigInteger` columns named `*_ms`, and wall-clock audit times are tz-aware
`DateTime` columns named `*_at` holding UTC.

Tables written by the batching writer (`bars` .. `risk_events`, `positions`, `run_state`) carry
no Python-side column defaults on purpose: the writer executes pre-compiled INSERTs with
positional parameters, and a Python-side default would add a bind parameter the rows do not
supply. Defaults there are server-side.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names are derived from table and column names, so every dialect agrees on them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_SYMBOL = 32
_LABEL = 32
#: Characters of a run id (`runs.id`, every `run_id`); PostgreSQL enforces it, SQLite does not.
MAX_RUN_ID_CHARS = 64
_RUN_ID = MAX_RUN_ID_CHARS


class Base(DeclarativeBase):
    """Declarative base whose metadata is the target of every Alembic revision."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(timezone=True),
        float: Float,
        int: BigInteger,
    }


class Run(Base):
    """One daemon or replay run; `id` is the run's name."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(_RUN_ID), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    config: Mapped[dict[str, Any]]
    strategy: Mapped[str] = mapped_column(String(_LABEL))
    interval: Mapped[str] = mapped_column(String(8))
    symbols: Mapped[list[str]]


class RunState(Base):
    """The engine state snapshot committed with the last batch (what a restart resumes from)."""

    __tablename__ = "run_state"

    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"), primary_key=True)
    last_slice_start_ms: Mapped[int]
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class BarRow(Base):
    """A confirmed candle, shared by all runs; the first source to store a bar wins."""

    __tablename__ = "bars"

    symbol: Mapped[str] = mapped_column(String(_SYMBOL), primary_key=True)
    interval: Mapped[str] = mapped_column(String(8), primary_key=True)
    start_ms: Mapped[int] = mapped_column(primary_key=True)
    open: Mapped[float]
    high: Mapped[float]
    low: Mapped[float]
    close: Mapped[float]
    volume: Mapped[float]
    turnover: Mapped[float]
    source: Mapped[str] = mapped_column(String(8))


class DecisionRow(Base):
    """One strategy verdict per run, symbol and processed bar (HOLD included)."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("run_id", "symbol", "bar_start_ms"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Covered by the unique constraint's index, whose first column is run_id.
    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"))
    symbol: Mapped[str] = mapped_column(String(_SYMBOL))
    bar_start_ms: Mapped[int]
    action: Mapped[str] = mapped_column(String(16))
    size: Mapped[float]
    confidence: Mapped[float]
    stop_loss: Mapped[float | None]
    take_profit: Mapped[float | None]
    strategic: Mapped[bool] = mapped_column(Boolean)
    act_steps: Mapped[int] = mapped_column(Integer)
    decision_type: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(_LABEL * 4))
    latency_us: Mapped[int]


class OrderRow(Base):
    """An order that passed risk (or was rejected); `id` is the client order id."""

    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(36), unique=True)
    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"), index=True)
    decision_id: Mapped[str | None] = mapped_column(
        String(128), ForeignKey("decisions.id"), index=True
    )
    symbol: Mapped[str] = mapped_column(String(_SYMBOL))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[float]
    status: Mapped[str] = mapped_column(String(16))
    reject_reason: Mapped[str | None] = mapped_column(Text)
    leg: Mapped[str] = mapped_column(String(_LABEL))
    reduce_only: Mapped[bool] = mapped_column(Boolean)
    created_ms: Mapped[int]
    stop_loss: Mapped[float | None]
    take_profit: Mapped[float | None]


class FillRow(Base):
    """An execution of an order; `seq` numbers the fills of one order from 0."""

    __tablename__ = "fills"
    __table_args__ = (
        UniqueConstraint("order_id", "seq"),
        Index(None, "run_id", "ts_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"))
    order_id: Mapped[str] = mapped_column(String(36), ForeignKey("orders.id"))
    seq: Mapped[int] = mapped_column(Integer)
    symbol: Mapped[str] = mapped_column(String(_SYMBOL))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[float]
    price: Mapped[float]
    fee: Mapped[float]
    ts_ms: Mapped[int]
    reason: Mapped[str] = mapped_column(String(16))


class PositionRow(Base):
    """The netted position of one symbol in one run (`qty` signed)."""

    __tablename__ = "positions"

    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(_SYMBOL), primary_key=True)
    qty: Mapped[float]
    avg_price: Mapped[float]
    realized_pnl: Mapped[float]
    fees: Mapped[float]
    updated_ms: Mapped[int]


class EquityRow(Base):
    """Mark-to-market account state of a run at one bar close."""

    __tablename__ = "equity"
    __table_args__ = (UniqueConstraint("run_id", "ts_ms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"))
    ts_ms: Mapped[int]
    equity: Mapped[float]
    cash: Mapped[float]
    unrealized_pnl: Mapped[float]
    drawdown: Mapped[float]
    peak_equity: Mapped[float]
    # Sum of |qty| x mark over symbols; older writers may omit it, hence the server default.
    gross_exposure_usdt: Mapped[float] = mapped_column(server_default=text("0"))


class RewardRow(Base):
    """The raw and HICRA-shaped reward of one decision (an RL transition's label)."""

    __tablename__ = "rewards"
    __table_args__ = (Index(None, "run_id", "bar_start_ms"),)

    decision_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("decisions.id"), primary_key=True
    )
    run_id: Mapped[str] = mapped_column(String(_RUN_ID))
    symbol: Mapped[str] = mapped_column(String(_SYMBOL))
    bar_start_ms: Mapped[int]
    raw_reward: Mapped[float]
    raw_return: Mapped[float]
    shaped_reward: Mapped[float]
    decision_type: Mapped[str] = mapped_column(String(16))
    weight: Mapped[float]


class RiskEventRow(Base):
    """A risk denial or trading-state change; `symbol` is '' for account-wide events.

    The natural key includes the detail, so distinct events of one kind at one instant (a kill,
    a resume and a second kill applied by one control poll) are all kept, while a retried batch
    or a resumed replay writing the same event again is still absorbed by `ON CONFLICT`. The key
    holds the detail's digest (`detail_sha256`, filled in by the writer) rather than the text:
    PostgreSQL cannot index a value over about 2.7 kB, and an operator's reason can be longer.
    """

    __tablename__ = "risk_events"
    __table_args__ = (UniqueConstraint("run_id", "ts_ms", "kind", "symbol", "detail_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(_RUN_ID), ForeignKey("runs.id"))
    ts_ms: Mapped[int]
    kind: Mapped[str] = mapped_column(String(_LABEL))
    symbol: Mapped[str] = mapped_column(String(_SYMBOL), server_default=text("''"))
    detail: Mapped[str] = mapped_column(Text)
    detail_sha256: Mapped[str] = mapped_column(String(64))


def detail_sha256(detail: str) -> str:
    """The `risk_events.detail_sha256` of a detail: SHA-256 of its UTF-8 bytes, in hex."""
    return hashlib.sha256(detail.encode()).hexdigest()


class ControlEventRow(Base):
    """An operator command (kill, resume, flatten) and when the daemon applied it."""

    __tablename__ = "control_events"
    __table_args__ = (Index(None, "applied_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    command: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(8))
    # Whether a kill also flattens (`trader kill --no-flatten` stores false).
    flatten: Mapped[bool] = mapped_column(server_default=true())
    applied_at: Mapped[datetime | None]


class ModelVersionRow(Base):
    """A trained checkpoint and its validation metrics; promotion makes the daemon swap to it."""

    __tablename__ = "model_versions"
    __table_args__ = (Index(None, "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    parent_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("model_versions.id"))
    checkpoint: Mapped[str] = mapped_column(String(1024))
    metrics: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
