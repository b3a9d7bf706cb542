"""risk_events: the natural key includes the detail, so distinct events at one instant are kept.

The old key (run_id, ts_ms, kind, symbol) silently dropped a second event of one kind at one
instant with another detail (a kill, a resume and a second kill applied by one control poll
stored only two rows). The new key adds `detail_sha256`, the SHA-256 of the detail's UTF-8
bytes in hex (the writer fills it in); a digest rather than the text because PostgreSQL cannot
index a value over about 2.7 kB. Writes stay idempotent: the same event written again (a
retried batch, a resumed replay) still conflicts and is absorbed.

Reviewed by hand: existing rows get their digest in Python (SQLite has no SHA-256 function),
the same function on both dialects; batch mode so SQLite rebuilds the table as it must.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:30:00
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = ("run_id", "ts_ms", "kind", "symbol")
_NEW_KEY = (*_OLD_KEY, "detail_sha256")

_risk_events = sa.table(
    "risk_events",
    sa.column("id", sa.Integer()),
    sa.column("detail", sa.Text()),
    sa.column("detail_sha256", sa.String(64)),
)


def upgrade() -> None:
    """Add the digest, fill it for existing rows, then make it NOT NULL and part of the key."""
    with op.batch_alter_table("risk_events") as batch:
        batch.add_column(sa.Column("detail_sha256", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(_risk_events.c.id, _risk_events.c.detail)).all()
    if rows:
        bind.execute(
            sa.update(_risk_events)
            .where(_risk_events.c.id == sa.bindparam("row_id"))
            .values(detail_sha256=sa.bindparam("digest")),
            [
                {"row_id": row_id, "digest": hashlib.sha256(detail.encode()).hexdigest()}
                for row_id, detail in rows
            ],
        )
    with op.batch_alter_table("risk_events") as batch:
        batch.alter_column("detail_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.drop_constraint(op.f("uq_risk_events_run_id_ts_ms_kind_symbol"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_risk_events_run_id_ts_ms_kind_symbol_detail_sha256"), list(_NEW_KEY)
        )


def downgrade() -> None:
    """Restore the old key; of events it cannot tell apart, only the first (lowest id) is kept."""
    first_ids = (
        sa.select(sa.func.min(sa.column("id")))
        .select_from(sa.table("risk_events"))
        .group_by(*(sa.column(name) for name in _OLD_KEY))
    )
    op.execute(sa.delete(_risk_events).where(_risk_events.c.id.not_in(first_ids.scalar_subquery())))
    with op.batch_alter_table("risk_events") as batch:
        batch.drop_constraint(
            op.f("uq_risk_events_run_id_ts_ms_kind_symbol_detail_sha256"), type_="unique"
        )
        batch.create_unique_constraint(
            op.f("uq_risk_events_run_id_ts_ms_kind_symbol"), list(_OLD_KEY)
        )
        batch.drop_column("detail_sha256")
