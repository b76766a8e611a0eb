"""Playback security: content keys (sealed), per-media access rules, the audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("access", sa.JSON))
    op.create_table(
        "content_keys",
        sa.Column("media_id", sa.String(64), sa.ForeignKey("media.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("kid", sa.String(32), nullable=False, unique=True),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("media_id", sa.String(64)),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_media", "audit_log", ["media_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_media", "audit_log")
    op.drop_table("audit_log")
    op.drop_table("content_keys")
    with op.batch_alter_table("media") as batch:
        batch.drop_column("access")
