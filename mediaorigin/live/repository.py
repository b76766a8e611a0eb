"""Live stream records in the library database (SQLite or PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..library.repository import new_id
from ..library.schema import live_streams as t


@dataclass(frozen=True)
class LiveStream:
    id: str
    title: str
    organization_id: str | None
    created_by: str
    state: str
    record: bool
    dvr_window: float
    latency_mode: str
    recording_media_id: str | None
    access: dict[str, Any] | None
    ladder: list[str]
    created_at: float
    started_at: float | None
    ended_at: float | None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: Any) -> LiveStream:
    return LiveStream(row.id, row.title, row.organization_id, row.created_by, row.state,
                      bool(row.record), row.dvr_window, row.latency_mode,
                      row.recording_media_id, row.access, list(row.ladder or []),
                      row.created_at, row.started_at,
                      row.ended_at)


_COLUMNS = [c for c in t.c if c.name not in ("stream_key_hash", "whip_token_hash")]


class LiveRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, *, title: str, organization_id: str | None, created_by: str,
                     record: bool, dvr_window: float, latency_mode: str, stream_key: str,
                     whip_token: str, access: dict[str, Any] | None = None,
                     ladder: list[str] | None = None) -> LiveStream:
        live_id = "live_" + new_id()
        async with self.engine.begin() as conn:
            await conn.execute(insert(t).values(
                id=live_id, title=title, organization_id=organization_id,
                created_by=created_by, state="idle", record=int(record),
                dvr_window=dvr_window, latency_mode=latency_mode,
                stream_key_hash=secret_hash(stream_key), whip_token_hash=secret_hash(whip_token),
                access=access, ladder=ladder or [], created_at=time.time()))
        found = await self.get(live_id)
        assert found is not None
        return found

    async def get(self, live_id: str) -> LiveStream | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(t.c.id == live_id))).first()
        return _record(row) if row is not None else None

    async def by_stream_key(self, stream_key: str) -> LiveStream | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(
                t.c.stream_key_hash == secret_hash(stream_key)))).first()
        return _record(row) if row is not None else None

    async def whip_token_matches(self, live_id: str, token: str) -> bool:
        async with self.engine.connect() as conn:
            stored = (await conn.execute(select(t.c.whip_token_hash).where(
                t.c.id == live_id))).scalar()
        return stored is not None and hmac.compare_digest(stored, secret_hash(token))

    async def list(self, organization_id: str | None, *, all_organizations: bool,
                   state: str | None = None, limit: int = 100) -> list[LiveStream]:
        query = select(*_COLUMNS).order_by(t.c.created_at.desc(), t.c.id).limit(limit)
        if not all_organizations:
            query = query.where(t.c.organization_id == organization_id) \
                if organization_id is not None else query.where(t.c.organization_id.is_(None))
        if state is not None:
            query = query.where(t.c.state == state)
        async with self.engine.connect() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    async def set_state(self, live_id: str, state: str, **fields: Any) -> None:
        values: dict[str, Any] = {"state": state, **fields}
        async with self.engine.begin() as conn:
            await conn.execute(update(t).where(t.c.id == live_id).values(**values))

    async def revoke_keys(self, live_id: str) -> None:
        """Ended streams accept no publisher: the key hashes become unmatchable."""
        async with self.engine.begin() as conn:
            await conn.execute(update(t).where(t.c.id == live_id).values(
                stream_key_hash="revoked:" + new_id(), whip_token_hash="revoked"))
