"""The library's records in SQL: media, generations, assets, jobs and history.

One `Library` per process over an async engine (SQLite or PostgreSQL). Every method is one
short transaction; callers never hold a session across awaits of other work.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import schema, search
from .records import (
    EMPTY_ANALYTICS,
    MEDIA_ID,
    Asset,
    Caption,
    Generation,
    HistoryEntry,
    Job,
    Media,
    PlayableItem,
    iso,
)

m = schema.media
SORTS = {"createdAt": m.c.created_at, "updatedAt": m.c.updated_at, "title": m.c.title,
         "duration": func.coalesce(m.c.duration, -1.0)}


class CursorError(ValueError):
    pass


@dataclass(frozen=True)
class MediaQuery:
    type: str | None = None
    status: str | None = None
    tag: str | None = None
    language: str | None = None
    organization_id: str | None = None
    q: str | None = None
    sort: str = "-createdAt"  # a key of SORTS, "-" for descending
    limit: int = 20
    cursor: str | None = None


def new_id() -> str:
    """12 URL-safe characters, never starting with '-' or '_': an id that starts with '-'
    reads as an option on a command line (`mediaorigin token --media -Xy...` failed)."""
    while True:
        media_id = secrets.token_urlsafe(9)
        if media_id[0].isalnum():
            return media_id


def _encode_cursor(value: Any, media_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, media_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, key: str) -> tuple[Any, str]:
    """The (sort value, id) of a cursor for sort `key`. The value must have the type of that
    key's column (text for title, a finite number otherwise): a tampered cursor is refused
    here instead of failing in the database (PostgreSQL types parameters strictly)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, media_id = json.loads(raw)
    except (ValueError, TypeError):
        raise CursorError("cursor is not one this server issued") from None
    if not isinstance(media_id, str) or not MEDIA_ID.match(media_id) or "\n" in media_id:
        raise CursorError("cursor is not one this server issued")
    if key == "title":
        if not isinstance(value, str) or "\x00" in value:
            raise CursorError("cursor is not one this server issued")
        return value, media_id
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CursorError("cursor is not one this server issued")
    try:
        value = float(value)
    except OverflowError:
        raise CursorError("cursor is not one this server issued") from None
    if not math.isfinite(value):
        raise CursorError("cursor is not one this server issued")
    return value, media_id


def _job(row: Row[Any]) -> Job:
    return Job(row.id, row.media_id, row.generation, row.type, row.priority, row.status,
               row.config, row.stage, row.percentage, row.details, row.error, row.attempts,
               row.created_at, row.started_at, row.completed_at, row.heartbeat_at, row.worker)


def _asset(row: Row[Any]) -> Asset:
    return Asset(row.kind, row.name, row.format, row.storage_key, row.size, row.generation,
                 row.width, row.height, row.bitrate, row.time, row.position)


class Library:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    # -- media -----------------------------------------------------------------------------

    async def create_media(self, *, title: str, type: str, description: str = "",
                           language: str | None = None, tags: Sequence[str] = (),
                           organization_id: str | None = None,
                           permissions: list[dict[str, Any]] | None = None,
                           meta: dict[str, Any] | None = None,
                           settings: dict[str, Any] | None = None,
                           status: str = "processing", media_id: str | None = None) -> str:
        media_id = media_id or new_id()
        now = time.time()
        tags = list(dict.fromkeys(tags))
        async with self.engine.begin() as conn:
            await conn.execute(insert(m).values(
                id=media_id, title=title, description=description, type=type, status=status,
                language=language, organization_id=organization_id, tags_text=" ".join(tags),
                duration=None, generation=None, meta=meta or {}, settings=settings or {},
                drm={}, analytics=dict(EMPTY_ANALYTICS), permissions=permissions or [],
                created_at=now, updated_at=now))
            if tags:
                await conn.execute(insert(schema.media_tags),
                                   [{"media_id": media_id, "tag": t} for t in tags])
        return media_id

    async def get_media(self, media_id: str) -> Media | None:
        if not MEDIA_ID.match(media_id):
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(m).where(m.c.id == media_id))).first()
            if row is None:
                return None
            return (await self._hydrate(conn, [row], full=True))[0]

    async def _hydrate(self, conn: AsyncConnection, rows: Sequence[Row[Any]],
                       full: bool = False) -> list[Media]:
        ids = [r.id for r in rows]
        if not ids:
            return []
        tags: dict[str, list[str]] = {i: [] for i in ids}
        for media_id, tag in await conn.execute(
                select(schema.media_tags.c.media_id, schema.media_tags.c.tag)
                .where(schema.media_tags.c.media_id.in_(ids))):
            tags[media_id].append(tag)
        a = schema.assets
        assets: dict[str, list[Asset]] = {i: [] for i in ids}
        current = {r.id: r.generation for r in rows}
        for row in await conn.execute(select(a).where(a.c.media_id.in_(ids))
                                      .order_by(a.c.position, a.c.id)):
            if row.generation == current[row.media_id]:
                assets[row.media_id].append(_asset(row))
        j = schema.jobs
        latest: dict[str, Job] = {}
        for row in await conn.execute(select(j).where(j.c.media_id.in_(ids))
                                      .order_by(j.c.created_at)):
            latest[row.media_id] = _job(row)
        gens: dict[str, list[Generation]] = {i: [] for i in ids}
        hist: dict[str, list[HistoryEntry]] = {i: [] for i in ids}
        if full:
            g = schema.generations
            for row in await conn.execute(select(g).where(g.c.media_id.in_(ids))
                                          .order_by(g.c.generation)):
                gens[row.media_id].append(Generation(
                    row.generation, row.status, row.source_key, row.source_name,
                    row.source_size, row.probe, row.created_at))
            h = schema.history
            for row in await conn.execute(select(h).where(h.c.media_id.in_(ids))
                                          .order_by(h.c.id.desc()).limit(200)):
                hist[row.media_id].append(HistoryEntry(row.action, row.at, row.details,
                                                       row.job_id))
        return [Media(
            r.id, r.title, r.description, r.type, r.status, r.language, r.organization_id,
            tuple(sorted(tags[r.id])), r.duration, r.generation, r.meta, r.settings, r.drm,
            r.analytics, r.permissions, r.created_at, r.updated_at, tuple(assets[r.id]),
            tuple(gens[r.id]), tuple(reversed(hist[r.id])), latest.get(r.id), r.access)
            for r in rows]

    async def list_media(self, query: MediaQuery) -> tuple[list[Media], str | None]:
        """One page of media and the cursor of the next page (None at the end)."""
        desc = query.sort.startswith("-")
        key = query.sort[1:] if desc else query.sort
        if key not in SORTS:
            raise CursorError(f"sort must be one of {', '.join(SORTS)} (prefix - to reverse)")
        col = SORTS[key]
        filters = (query.type, query.status, query.tag, query.language, query.organization_id)
        if any(v is not None and "\x00" in v for v in filters):
            return [], None  # no stored text holds NUL (PostgreSQL refuses it as a parameter)
        stmt = select(m)
        conds = []
        for column, value in ((m.c.type, query.type), (m.c.status, query.status),
                              (m.c.language, query.language),
                              (m.c.organization_id, query.organization_id)):
            if value is not None:
                conds.append(column == value)
        if query.tag is not None:
            t = schema.media_tags
            conds.append(m.c.id.in_(select(t.c.media_id).where(t.c.tag == query.tag)))
        if query.q:
            match = search.matches(self.dialect, query.q)
            if match is not None:
                conds.append(match)
        if query.cursor:
            value, after_id = _decode_cursor(query.cursor, key)
            if desc:
                conds.append(or_(col < value, and_(col == value, m.c.id < after_id)))
            else:
                conds.append(or_(col > value, and_(col == value, m.c.id > after_id)))
        if conds:
            stmt = stmt.where(and_(*conds))
        order = (col.desc(), m.c.id.desc()) if desc else (col.asc(), m.c.id.asc())
        stmt = stmt.add_columns(col.label("sort_value")).order_by(*order).limit(query.limit + 1)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(stmt))
            more = len(rows) > query.limit
            rows = rows[:query.limit]
            items = await self._hydrate(conn, rows)
        cursor = _encode_cursor(rows[-1].sort_value, rows[-1].id) if more else None
        return items, cursor

    async def update_media(self, media_id: str, values: dict[str, Any],
                           tags: Sequence[str] | None = None) -> bool:
        """Set columns (title, description, language, meta, status...) and replace tags."""
        values = dict(values, updated_at=time.time())
        if tags is not None:
            tags = list(dict.fromkeys(tags))
            values["tags_text"] = " ".join(tags)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(m).where(m.c.id == media_id).values(**values))
            if result.rowcount == 0:
                return False
            if tags is not None:
                t = schema.media_tags
                await conn.execute(delete(t).where(t.c.media_id == media_id))
                if tags:
                    await conn.execute(insert(t), [{"media_id": media_id, "tag": x}
                                                   for x in tags])
        return True

    async def delete_media(self, media_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(m).where(m.c.id == media_id))
        return result.rowcount > 0

    async def media_state(self, media_id: str) -> tuple[str, Job | None] | None:
        """A media item's status and its latest job, without the rest of the record (what
        a progress stream polls)."""
        j = schema.jobs
        async with self.engine.connect() as conn:
            status = (await conn.execute(select(m.c.status).where(m.c.id == media_id))).scalar()
            if status is None:
                return None
            row = (await conn.execute(select(j).where(j.c.media_id == media_id)
                                      .order_by(j.c.created_at.desc()).limit(1))).first()
        return status, _job(row) if row else None

    async def find_by_title(self, title: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(m.c.id).where(m.c.title == title)
                                       .order_by(m.c.created_at).limit(1))).scalar()

    async def playable(self, media_id: str) -> PlayableItem | None:
        """The current generation's renditions and captions, or None if nothing is playable."""
        if not MEDIA_ID.match(media_id):
            return None
        a = schema.assets
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(m.c.title, m.c.generation, m.c.access,
                                             m.c.organization_id)
                                      .where(m.c.id == media_id))).first()
            if row is None or row.generation is None:
                return None
            assets = [_asset(r) for r in await conn.execute(
                select(a).where(a.c.media_id == media_id, a.c.generation == row.generation,
                                a.c.kind.in_(("rendition", "caption")))
                .order_by(a.c.position, a.c.id))]
        files = tuple(x.storage_key for x in assets if x.kind == "rendition")
        if not files:
            return None
        return PlayableItem(media_id, row.title, files,
                            tuple(Caption(x.name, x.storage_key) for x in assets
                                  if x.kind == "caption"), row.access, row.organization_id)

    async def access(self, media_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """A media item's own playback access rules (None: only the global and organization
        ones) and its organization."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(m.c.access, m.c.organization_id)
                                      .where(m.c.id == media_id))).first()
        return (row.access, row.organization_id) if row else (None, None)

    # -- generations and assets ------------------------------------------------------------

    async def asset(self, media_id: str, storage_key: str) -> Asset | None:
        """A listed asset of any generation not purged (what the asset route may serve)."""
        a = schema.assets
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(a).where(a.c.media_id == media_id,
                                                      a.c.storage_key == storage_key)
                                      .limit(1))).first()
        return _asset(row) if row else None

    async def add_generation(self, media_id: str, source_key: str, source_name: str,
                             source_size: int, probe: dict[str, Any] | None = None) -> int:
        """The next generation number of a media item; two uploads at once get two numbers
        (the loser of the primary-key race takes the next one)."""
        g = schema.generations
        for _ in range(5):
            try:
                async with self.engine.begin() as conn:
                    last = (await conn.execute(select(func.max(g.c.generation))
                                               .where(g.c.media_id == media_id))).scalar()
                    number = (last or 0) + 1
                    await conn.execute(insert(g).values(
                        media_id=media_id, generation=number, status="processing",
                        source_key=source_key, source_name=source_name,
                        source_size=source_size, probe=probe or {}, created_at=time.time()))
                return number
            except IntegrityError:
                continue
        raise RuntimeError(f"could not number a new version of {media_id}")

    async def generation(self, media_id: str, number: int) -> Generation | None:
        g = schema.generations
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(g).where(g.c.media_id == media_id,
                                                      g.c.generation == number))).first()
        if row is None:
            return None
        return Generation(row.generation, row.status, row.source_key, row.source_name,
                          row.source_size, row.probe, row.created_at)

    async def set_generation(self, media_id: str, number: int, **values: Any) -> None:
        g = schema.generations
        async with self.engine.begin() as conn:
            await conn.execute(update(g).where(g.c.media_id == media_id,
                                               g.c.generation == number).values(**values))

    async def publish(self, media_id: str, number: int, assets: Sequence[Asset],
                      media_values: dict[str, Any]) -> None:
        """Make generation `number` the one players get, with its assets, atomically."""
        a = schema.assets
        async with self.engine.begin() as conn:
            # Captions added through the API belong to the version, not to one processing
            # run: they stay unless the new set brings captions of its own.
            stale = delete(a).where(a.c.media_id == media_id, a.c.generation == number)
            if not any(x.kind == "caption" for x in assets):
                stale = stale.where(a.c.kind != "caption")
            await conn.execute(stale)
            if assets:
                await conn.execute(insert(a), [
                    {"media_id": media_id, "generation": number, "kind": x.kind,
                     "name": x.name, "format": x.format, "storage_key": x.storage_key,
                     "size": x.size, "width": x.width, "height": x.height,
                     "bitrate": x.bitrate, "time": x.time, "position": x.position}
                    for x in assets])
            await conn.execute(update(schema.generations).where(
                schema.generations.c.media_id == media_id,
                schema.generations.c.generation == number).values(status="ready"))
            await conn.execute(update(m).where(m.c.id == media_id).values(
                generation=number, status="ready", updated_at=time.time(), **media_values))

    async def put_asset(self, media_id: str, asset: Asset) -> None:
        """Add an asset to a generation, replacing one of the same kind and name (captions)."""
        a = schema.assets
        async with self.engine.begin() as conn:
            await conn.execute(delete(a).where(a.c.media_id == media_id,
                                               a.c.generation == asset.generation,
                                               a.c.kind == asset.kind, a.c.name == asset.name))
            await conn.execute(insert(a).values(
                media_id=media_id, generation=asset.generation, kind=asset.kind,
                name=asset.name, format=asset.format, storage_key=asset.storage_key,
                size=asset.size, width=asset.width, height=asset.height,
                bitrate=asset.bitrate, time=asset.time, position=asset.position))
            await conn.execute(update(m).where(m.c.id == media_id)
                               .values(updated_at=time.time()))

    async def storage_keys(self, media_id: str, number: int | None = None) -> list[str]:
        """Stored files of a media item (or of one generation): sources and assets."""
        a, g = schema.assets, schema.generations
        async with self.engine.connect() as conn:
            qa = select(a.c.storage_key).where(a.c.media_id == media_id)
            qg = select(g.c.source_key).where(g.c.media_id == media_id)
            if number is not None:
                qa = qa.where(a.c.generation == number)
                qg = qg.where(g.c.generation == number)
            return [*(await conn.execute(qg)).scalars(), *(await conn.execute(qa)).scalars()]

    async def purge_generation(self, media_id: str, number: int) -> None:
        a = schema.assets
        async with self.engine.begin() as conn:
            await conn.execute(delete(a).where(a.c.media_id == media_id,
                                               a.c.generation == number))
            await conn.execute(update(schema.generations).where(
                schema.generations.c.media_id == media_id,
                schema.generations.c.generation == number).values(status="purged"))

    # -- jobs and history ------------------------------------------------------------------

    async def create_job(self, media_id: str, generation: int, type: str,
                         config: dict[str, Any], priority: int = 0) -> Job:
        job_id = new_id()
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(insert(schema.jobs).values(
                id=job_id, media_id=media_id, generation=generation, type=type,
                priority=priority, status="queued", config=config, stage="queued",
                percentage=0.0, details={}, error=None, attempts=0, created_at=now))
        job = await self.get_job(job_id)
        assert job is not None
        return job

    async def get_job(self, job_id: str) -> Job | None:
        j = schema.jobs
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(j).where(j.c.id == job_id))).first()
        return _job(row) if row else None

    async def jobs(self, *, status: Sequence[str] | None = None,
                   media_id: str | None = None) -> list[Job]:
        j = schema.jobs
        stmt = select(j).order_by(j.c.created_at)
        if status:
            stmt = stmt.where(j.c.status.in_(list(status)))
        if media_id:
            stmt = stmt.where(j.c.media_id == media_id)
        async with self.engine.connect() as conn:
            return [_job(r) for r in await conn.execute(stmt)]

    async def start_job(self, job_id: str, worker: str, stale_after: float) -> Job | None:
        """Take a job: queued → running, or running with a heartbeat older than `stale_after`
        (its worker died). None if it is finished or another worker is alive on it."""
        j = schema.jobs
        now = time.time()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(j).where(j.c.id == job_id, or_(
                    j.c.status == "queued",
                    and_(j.c.status == "running",
                         func.coalesce(j.c.heartbeat_at, 0.0) < now - stale_after)))
                .values(status="running", attempts=j.c.attempts + 1, started_at=now,
                        heartbeat_at=now, worker=worker, stage="validation", percentage=0.0,
                        error=None))
        if result.rowcount == 0:
            return None
        return await self.get_job(job_id)

    async def heartbeat(self, job_id: str, worker: str) -> str | None:
        """Keep a running job ours; returns its status (a cancel shows up here)."""
        j = schema.jobs
        async with self.engine.begin() as conn:
            await conn.execute(update(j).where(j.c.id == job_id, j.c.worker == worker,
                                               j.c.status == "running")
                               .values(heartbeat_at=time.time()))
            return (await conn.execute(select(j.c.status).where(j.c.id == job_id))).scalar()

    async def progress(self, job_id: str, stage: str, percentage: float,
                       details: dict[str, Any] | None = None, worker: str | None = None
                       ) -> str | None:
        """Record progress of a running job; returns the job's status (to notice a cancel).

        Progress only moves forward: reports are written from concurrent tasks (a stage's
        last callback can land after the next stage's start), so a lower percentage than the
        one recorded is a stale report and is dropped (start_job/requeue_job reset it)."""
        j = schema.jobs
        values: dict[str, Any] = {"stage": stage, "percentage": percentage}
        if details is not None:
            values["details"] = details
        async with self.engine.begin() as conn:
            stmt = update(j).where(j.c.id == job_id, j.c.status == "running",
                                   j.c.percentage <= percentage)
            if worker is not None:
                stmt = stmt.where(j.c.worker == worker)
            await conn.execute(stmt.values(**values))
            return (await conn.execute(select(j.c.status).where(j.c.id == job_id))).scalar()

    async def finish_job(self, job_id: str, status: str,
                         error: dict[str, Any] | None = None, worker: str | None = None
                         ) -> bool:
        """running|queued → completed|failed|cancelled; False if it had already finished (or,
        with `worker`, if that run no longer holds the job)."""
        j = schema.jobs
        values: dict[str, Any] = {"status": status, "error": error,
                                  "completed_at": time.time()}
        if status == "completed":
            values.update(stage="done", percentage=100.0)
        stmt = update(j).where(j.c.id == job_id, j.c.status.in_(("queued", "running")))
        if worker is not None:
            stmt = stmt.where(j.c.worker == worker)
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt.values(**values))
        return result.rowcount > 0

    async def requeue_job(self, job_id: str) -> bool:
        """failed|cancelled → queued (retry)."""
        j = schema.jobs
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(j).where(j.c.id == job_id, j.c.status.in_(("failed", "cancelled")))
                .values(status="queued", stage="queued", percentage=0.0, error=None,
                        completed_at=None, started_at=None, worker=None))
        return result.rowcount > 0

    async def audit(self, actor: str, role: str, action: str, media_id: str | None,
                    details: dict[str, Any]) -> None:
        """Append to the audit log (never updated or deleted through the library)."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(schema.audit_log).values(
                at=time.time(), actor=actor, role=role, action=action, media_id=media_id,
                details=details))

    async def job_counts(self) -> dict[str, int]:
        """Jobs by status, over every organization (operators' metrics)."""
        j = schema.jobs
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(j.c.status, func.count()).group_by(j.c.status))
            return {status: int(n) for status, n in rows}

    async def audit_entries(self, media_id: str | None = None, limit: int = 100
                            ) -> list[dict[str, Any]]:
        a = schema.audit_log
        stmt = select(a).order_by(a.c.id.desc()).limit(limit)
        if media_id is not None:
            stmt = stmt.where(a.c.media_id == media_id)
        async with self.engine.connect() as conn:
            return [{"id": r.id, "at": iso(r.at), "actor": r.actor, "role": r.role,
                     "action": r.action, "mediaId": r.media_id, "details": r.details}
                    for r in await conn.execute(stmt)]

    async def add_history(self, media_id: str, action: str, details: dict[str, Any],
                          job_id: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(schema.history).values(
                media_id=media_id, job_id=job_id, action=action, details=details,
                at=time.time()))
