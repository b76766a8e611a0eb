"""The library's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Nested parts of the design's Media record that are only ever read and written whole
(metadata, processing settings, analytics, organization, DRM settings) live in JSON columns;
what is filtered, sorted or joined on has its own column. Times are unix seconds (float), so
cursors compare exactly on both databases. The full-text index is dialect-specific and made by
the migration: an FTS5 table kept by triggers on SQLite, a generated tsvector on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

media = Table(
    "media", metadata,
    Column("id", String(64), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("type", String(16), nullable=False),  # video audio image document interactive
    Column("status", String(16), nullable=False),  # processing ready failed archived
    Column("language", String(35)),
    Column("organization_id", String(64)),
    Column("tags_text", Text, nullable=False, default=""),  # tags joined by spaces, for search
    Column("duration", Float),
    # The generation players get; None until a first processing run succeeded. A re-upload
    # processes a new generation while this one keeps playing.
    Column("generation", Integer),
    Column("meta", JSON, nullable=False),  # the design's `metadata` (a reserved name here)
    Column("settings", JSON, nullable=False),  # processing.settings
    Column("drm", JSON, nullable=False),  # streaming.drm
    Column("analytics", JSON, nullable=False),
    Column("permissions", JSON, nullable=False),  # organization.permissions
    Column("access", JSON),  # playback access rules of this item (auth.rules JSON form)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_media_created", "created_at", "id"),
    Index("ix_media_org", "organization_id"),
    Index("ix_media_status", "status"),
)

media_tags = Table(
    "media_tags", metadata,
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"),
           primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index("ix_media_tags_tag", "tag"),
)

# One row per uploaded source file: generation n of a media item.
generations = Table(
    "generations", metadata,
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"),
           primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # processing ready failed purged
    Column("source_key", Text, nullable=False),
    Column("source_name", Text, nullable=False, default=""),
    Column("source_size", BigInteger, nullable=False),
    Column("probe", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Every stored file derived from a generation: renditions, thumbnails, sprites, captions...
assets = Table(
    "assets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"), nullable=False),
    Column("generation", Integer, nullable=False),
    # rendition image document thumbnail poster preview sprite sprite_vtt caption
    Column("kind", String(16), nullable=False),
    Column("name", String(100), nullable=False),  # quality (720p), file name or language
    Column("format", String(16), nullable=False),
    Column("storage_key", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("width", Integer),
    Column("height", Integer),
    Column("bitrate", Integer),
    Column("time", Float),  # thumbnails: seconds into the media
    Column("position", Integer, nullable=False, default=0),
    Index("ix_assets_media", "media_id", "generation", "kind"),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("type", String(32), nullable=False),  # process reprocess external
    Column("priority", Integer, nullable=False, default=0),
    # queued running completed failed cancelled
    Column("status", String(16), nullable=False),
    Column("config", JSON, nullable=False),
    Column("stage", String(32), nullable=False, default="queued"),
    Column("percentage", Float, nullable=False, default=0.0),
    Column("details", JSON, nullable=False),
    Column("error", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("completed_at", Float),
    # Liveness of a running job: a job whose heartbeat is older than the stale limit may be
    # taken over (its worker died); a fresh one is never run twice.
    Column("heartbeat_at", Float),
    Column("worker", String(128)),
    Index("ix_jobs_media", "media_id", "created_at"),
    Index("ix_jobs_status", "status"),
)

# The processing history of the design (action, timestamp, details), append-only.
history = Table(
    "history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", String(64)),
    Column("action", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_history_media", "media_id", "id"),
)

# Content keys for encrypted playback: the key itself sealed with AES-GCM under the master key
# ([auth] master_key), so a copy of the database alone opens nothing.
content_keys = Table(
    "content_keys", metadata,
    Column("media_id", String(64), ForeignKey("media.id", ondelete="CASCADE"),
           primary_key=True),
    Column("kid", String(32), nullable=False, unique=True),  # hex, 16 bytes
    Column("sealed", Text, nullable=False),  # base64(nonce || ciphertext+tag)
    Column("created_at", Float, nullable=False),
)

# Append-only log of management actions: who (key id), what, on which media, when.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("media_id", String(64)),
    Column("details", JSON, nullable=False),
    Index("ix_audit_media", "media_id", "id"),
)

live_streams = Table(
    "live_streams", metadata,
    Column("id", String(64), primary_key=True),
    Column("title", Text, nullable=False),
    Column("organization_id", String(64)),
    Column("created_by", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # idle live ended
    Column("record", Integer, nullable=False),  # 0/1
    Column("dvr_window", Float, nullable=False),  # seconds, 0: sliding window only
    Column("latency_mode", String(16), nullable=False),  # low normal
    # SHA-256 of the RTMP stream key and the WHIP bearer token; the secrets are shown once.
    Column("stream_key_hash", String(64), nullable=False, unique=True),
    Column("whip_token_hash", String(64), nullable=False),
    Column("recording_media_id", String(64)),
    Column("access", JSON),  # playback access rules, as for media
    Column("ladder", JSON),  # transcoded rungs, e.g. ["720p", "360p"]
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Index("ix_live_org", "organization_id", "created_at"),
)
