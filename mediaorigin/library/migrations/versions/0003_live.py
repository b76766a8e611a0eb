"""Live streams: keys (hashed), state, DVR and recording settings.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_streams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("record", sa.Integer, nullable=False),
        sa.Column("dvr_window", sa.Float, nullable=False),
        sa.Column("latency_mode", sa.String(16), nullable=False),
        sa.Column("stream_key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("whip_token_hash", sa.String(64), nullable=False),
        sa.Column("recording_media_id", sa.String(64)),
        sa.Column("access", sa.JSON),
        sa.Column("ladder", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index("ix_live_org", "live_streams", ["organization_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_live_org", "live_streams")
    op.drop_table("live_streams")
