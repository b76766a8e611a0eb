"""The media library: media, tags, generations, assets, jobs, history, full-text search.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _media_fk() -> sa.ForeignKey:
    return sa.ForeignKey("media.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("language", sa.String(35)),
        sa.Column("organization_id", sa.String(64)),
        sa.Column("tags_text", sa.Text, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("generation", sa.Integer),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("drm", sa.JSON, nullable=False),
        sa.Column("analytics", sa.JSON, nullable=False),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_media_created", "media", ["created_at", "id"])
    op.create_index("ix_media_org", "media", ["organization_id"])
    op.create_index("ix_media_status", "media", ["status"])
    op.create_table(
        "media_tags",
        sa.Column("media_id", sa.String(64), _media_fk(), primary_key=True),
        sa.Column("tag", sa.String(100), primary_key=True),
    )
    op.create_index("ix_media_tags_tag", "media_tags", ["tag"])
    op.create_table(
        "generations",
        sa.Column("media_id", sa.String(64), _media_fk(), primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("source_name", sa.Text, nullable=False),
        sa.Column("source_size", sa.BigInteger, nullable=False),
        sa.Column("probe", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("media_id", sa.String(64), _media_fk(), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("storage_key", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("bitrate", sa.Integer),
        sa.Column("time", sa.Float),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_assets_media", "assets", ["media_id", "generation", "kind"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("media_id", sa.String(64), _media_fk(), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("percentage", sa.Float, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("worker", sa.String(128)),
    )
    op.create_index("ix_jobs_media", "jobs", ["media_id", "created_at"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("media_id", sa.String(64), _media_fk(), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_history_media", "history", ["media_id", "id"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE media ADD COLUMN search tsvector GENERATED ALWAYS AS ("
            "to_tsvector('english', title || ' ' || description || ' ' || tags_text)) STORED")
        op.execute("CREATE INDEX ix_media_search ON media USING gin (search)")
    else:  # SQLite: an FTS5 table kept in step by triggers
        op.execute("CREATE VIRTUAL TABLE media_fts USING fts5(media_id UNINDEXED, title, "
                   "description, tags, tokenize='porter unicode61 remove_diacritics 2')")
        op.execute("CREATE TRIGGER media_fts_insert AFTER INSERT ON media BEGIN "
                   "INSERT INTO media_fts (media_id, title, description, tags) "
                   "VALUES (new.id, new.title, new.description, new.tags_text); END")
        op.execute("CREATE TRIGGER media_fts_delete AFTER DELETE ON media BEGIN "
                   "DELETE FROM media_fts WHERE media_id = old.id; END")
        op.execute("CREATE TRIGGER media_fts_update AFTER UPDATE OF title, description, "
                   "tags_text ON media BEGIN UPDATE media_fts SET title = new.title, "
                   "description = new.description, tags = new.tags_text "
                   "WHERE media_id = old.id; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("media_fts_insert", "media_fts_delete", "media_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS media_fts")
    for table in ("history", "jobs", "assets", "generations", "media_tags", "media"):
        op.drop_table(table)
