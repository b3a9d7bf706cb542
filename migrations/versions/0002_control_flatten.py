"""control_events.flatten: whether a kill also flattens (`trader kill --no-flatten` stores false).

Reviewed by hand: one boolean column, true for every existing row (a kill flattened by default).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 17:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column; batch mode so SQLite rebuilds the table as it must."""
    with op.batch_alter_table("control_events") as batch:
        batch.add_column(
            sa.Column("flatten", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("control_events") as batch:
        batch.drop_column("flatten")
