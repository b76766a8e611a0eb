"""The library's database layer on both SQLite and PostgreSQL: migrations, media records,
filters, full-text search, cursor pagination, jobs, generations, and one origin end to end on
PostgreSQL.

PostgreSQL tests use the session database of `postgres_url` (tests/library_fixtures.py),
migrated once and emptied before each test (`DELETE FROM media` cascades to everything else);
they are skipped with the reason when no server is reachable.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from library_fixtures import POSTGRES_ADMIN, auth, library_config
from origin_server import OriginThread
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mediaorigin.library import schema
from mediaorigin.library.db import MIGRATIONS, migrate, open_database
from mediaorigin.library.records import EMPTY_ANALYTICS, Asset, Media
from mediaorigin.library.repository import CursorError, Library, MediaQuery, new_id

DIALECTS = ["sqlite", "postgresql"]
_migrated: set[str] = set()  # PostgreSQL URLs already brought to head in this session


# -- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A sync fixture, so the session `postgres_url` (which uses asyncio.run) is set up
    outside the test's running loop."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/lib.db"
    return request.getfixturevalue("postgres_url")


async def _clean(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM media"))  # cascades: tags, generations, assets...


@pytest.fixture
async def library(db_url: str, tmp_path: Path) -> AsyncIterator[Library]:
    postgres = db_url.startswith("postgresql")
    engine = await open_database(db_url, tmp_path,
                                 auto_migrate=not (postgres and db_url in _migrated))
    if postgres:
        _migrated.add(db_url)
        await _clean(engine)
    lib = Library(engine)
    try:
        yield lib
    finally:
        await lib.close()


async def ids_of(lib: Library, **query: Any) -> set[str]:
    items, cursor = await lib.list_media(MediaQuery(limit=100, **query))
    assert cursor is None
    return {m.id for m in items}


async def count(lib: Library, table: str, media_id: str) -> int:
    t = schema.metadata.tables[table]
    async with lib.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(t)
                                   .where(t.c.media_id == media_id))).scalar_one()


def cursor_of(value: Any, media_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, media_id]).encode()).decode()


def alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


HEAD = ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


async def _pg_admin(sql: str) -> None:
    conn = await asyncio.wait_for(asyncpg.connect(POSTGRES_ADMIN), 5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# -- migrations ----------------------------------------------------------------------------

async def _version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version")))
                    .scalars())


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrations_upgrade_noop_downgrade_upgrade(db_url: str, tmp_path: Path) -> None:
    dialect = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    if dialect == "sqlite":
        url, drop = f"sqlite:///{tmp_path}/fresh.db", None
    else:  # a database of its own, not the shared session one
        name = f"mediaorigin_mig_{secrets.token_hex(4)}"
        await _pg_admin(f"CREATE DATABASE {name}")
        url, drop = f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}", name
    engine = await open_database(url, tmp_path)
    try:
        assert HEAD == "0003"
        assert await _version(engine) == [HEAD]
        tables = {"media", "media_tags", "generations", "assets", "jobs", "history",
                  "content_keys", "audit_log", "live_streams"}
        assert tables | {"alembic_version"} <= await _tables(engine)
        lib = Library(engine)
        kept = await lib.create_media(title="Survives a second migrate", type="video")

        statements: list[str] = []

        def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
            statements.append(statement.strip().upper())

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        await migrate(engine)  # already at head: nothing changes
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        assert not [s for s in statements if s.startswith(("CREATE", "ALTER", "DROP"))]
        assert await _version(engine) == [HEAD]
        assert (await lib.get_media(kept)) is not None

        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        assert await _tables(engine) - {"alembic_version"} == set()
        assert await _version(engine) == []
        if dialect == "sqlite":
            async with engine.connect() as conn:
                left = (await conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'media%'"))).scalars()
                assert list(left) == []  # FTS table, its shadow tables and triggers gone

        await migrate(engine)
        assert await _version(engine) == [HEAD]
        assert tables <= await _tables(engine)
        again = await lib.create_media(title="Searchable after re-upgrade", type="video")
        assert await ids_of(lib, q="searchable") == {again}
    finally:
        await engine.dispose()
        if drop:
            await _pg_admin(f"DROP DATABASE IF EXISTS {drop} WITH (FORCE)")


# -- media records -------------------------------------------------------------------------

async def test_create_get_round_trip(library: Library) -> None:
    meta = {"typeGiven": True, "copyright": {"owner": "Uni", "year": 2026, "license": None},
            "nested": {"list": [1, 2.5, "drei", None, {"deep": [True, False]}]},
            "unicode": "Grüße – 講義"}
    settings = {"quality": ["360p", "720p"], "thumbnails": {"enabled": False, "count": 0}}
    permissions = [{"role": "student", "actions": ["view"]},
                   {"role": "instructor", "actions": ["view", "edit"]}]
    before = time.time()
    media_id = await library.create_media(
        title="Round trip", type="audio", description="Every field survives",
        language="pt-BR", tags=["zeta", "alpha", "mid", "alpha"], organization_id="org-a",
        permissions=permissions, meta=meta, settings=settings, status="archived")
    got = await library.get_media(media_id)
    assert isinstance(got, Media)
    assert (got.id, got.title, got.description, got.type, got.status, got.language,
            got.organization_id) == (media_id, "Round trip", "Every field survives", "audio",
                                     "archived", "pt-BR", "org-a")
    assert got.tags == ("alpha", "mid", "zeta")  # deduplicated, sorted
    assert got.meta == meta and got.settings == settings and got.permissions == permissions
    assert got.drm == {} and got.analytics == EMPTY_ANALYTICS
    assert got.duration is None and got.generation is None
    assert before <= got.created_at == got.updated_at <= time.time()
    assert got.assets == () and got.generations == () and got.history == ()
    assert got.latest_job is None
    record = got.to_json()
    assert record["organization"] == {"id": "org-a", "permissions": permissions}
    assert record["metadata"]["tags"] == ["alpha", "mid", "zeta"]

    bare = await library.get_media(await library.create_media(title="Bare", type="video"))
    assert bare is not None
    assert (bare.tags, bare.meta, bare.permissions, bare.language, bare.organization_id,
            bare.description, bare.status) == ((), {}, [], None, None, "", "processing")

    assert await library.get_media("doesNotExist123") is None
    for invalid in ("", "../etc", "a b", "x" * 65, "id\x00", "ünïcode", "a/b"):
        assert await library.get_media(invalid) is None
        assert await library.playable(invalid) is None


async def test_list_filters(library: Library) -> None:
    create = library.create_media
    v1 = await create(title="v1", type="video", status="ready", tags=["math", "intro"],
                      language="en", organization_id="org-a")
    v2 = await create(title="v2", type="video", status="processing", tags=["math"],
                      language="de", organization_id="org-b")
    a1 = await create(title="a1", type="audio", status="ready", tags=["podcast"],
                      language="en", organization_id="org-a")
    d1 = await create(title="d1", type="document", status="failed", organization_id=None)
    i1 = await create(title="i1", type="image", status="archived", tags=["intro"],
                      language="de-CH", organization_id="org-b")
    assert await ids_of(library) == {v1, v2, a1, d1, i1}
    assert await ids_of(library, type="video") == {v1, v2}
    assert await ids_of(library, type="interactive") == set()
    assert await ids_of(library, status="ready") == {v1, a1}
    assert await ids_of(library, status="archived") == {i1}
    assert await ids_of(library, tag="math") == {v1, v2}
    assert await ids_of(library, tag="intro") == {v1, i1}
    assert await ids_of(library, tag="mat") == set()  # tags are exact, not prefixes
    assert await ids_of(library, language="de") == {v2}  # exact: not de-CH
    assert await ids_of(library, language="de-CH") == {i1}
    assert await ids_of(library, organization_id="org-a") == {v1, a1}
    assert await ids_of(library, organization_id="org-b") == {v2, i1}
    assert await ids_of(library, organization_id="org-c") == set()
    assert await ids_of(library, type="video", status="ready", tag="math",
                        language="en", organization_id="org-a") == {v1}
    assert await ids_of(library, type="video", organization_id="org-a", tag="podcast") == set()
    # NUL can't be stored in PostgreSQL text (it used to be a DBAPIError there): no match.
    for field in ("tag", "language", "organization_id", "type", "status"):
        assert await ids_of(library, **{field: "x\x00y"}) == set()


async def test_full_text_search(library: Library) -> None:
    create = library.create_media
    intro = await create(title="Introduction to Thermodynamics", type="video",
                         description="Entropy and the second law", tags=["physics", "heat"])
    lecture = await create(title="Linear algebra lecture", type="video",
                           description="Vectors, matrices; eigenvalues", tags=["math"])
    tagged = await create(title="Untitled", type="audio", tags=["thermodynamics-extra"])
    plain = await create(title="Cooking pasta", type="video")
    assert await ids_of(library, q="thermodynamics") == {intro, tagged}  # title and tag
    assert await ids_of(library, q="entropy") == {intro}  # description
    assert await ids_of(library, q="physics") == {intro}  # tag
    assert await ids_of(library, q="eigenvalues") == {lecture}
    assert await ids_of(library, q="Thermo") == {intro, tagged}  # prefix, any case
    assert await ids_of(library, q="intro thermo") == {intro}  # every word required
    assert await ids_of(library, q="lin alg lect") == {lecture}
    assert await ids_of(library, q="linear thermodynamics") == set()
    assert await ids_of(library, q="pasta", type="audio") == set()  # with other filters
    assert await ids_of(library, q="pasta") == {plain}
    everything = {intro, lecture, tagged, plain}
    # Query syntax of either engine is never interpreted: only the words count.
    hostile = ['"', "'", '"thermo', "thermo'", '""', "*", "thermo*", "(thermo)", "thermo OR pasta",
               "NEAR(thermo pasta)", "thermo AND NOT pasta", "-pasta", "^pasta", "pasta:*",
               "pasta & !cooking", "pasta | entropy", "<->", "\\", "title:pasta", "{pasta}",
               "pasta\x00", "'; DROP TABLE media; --", "%", "_", "___"]
    for q in hostile:
        found = await ids_of(library, q=q)
        assert found <= everything, q
    assert await ids_of(library, q='"thermo') == {intro, tagged}
    assert await ids_of(library, q="(thermo)") == {intro, tagged}
    assert await ids_of(library, q="thermo OR pasta") == set()  # OR is just a word
    assert await ids_of(library, q="pasta:*") == {plain}
    assert await ids_of(library, q="'; DROP TABLE media; --") == set()
    assert await ids_of(library, q='"*() ') == everything  # no words: no text filter
    assert await ids_of(library, q="") == everything
    assert await library.get_media(plain) is not None


async def test_search_non_ascii(library: Library) -> None:
    create = library.create_media
    cafe = await create(title="Café crème für Anfänger", type="video")
    street = await create(title="Die Straße der Übungen", type="video")
    tokyo = await create(title="東京 大学 講義", type="video", tags=["日本語"])
    joined = await create(title="日本語の講義", type="video")
    for q, expected in [("café", {cafe}), ("crème", {cafe}), ("anfänger", {cafe}),
                        ("FÜR", {cafe}), ("straße", {street}), ("übungen", {street}),
                        ("Übung", {street}), ("講義", {tokyo}), ("東京", {tokyo}),
                        ("東京 講義", {tokyo}), ("日本語", {tokyo, joined}),
                        ("日本語の講義", {joined})]:
        assert await ids_of(library, q=q) == expected, q
    # Neither engine segments CJK text: "日本語の講義" is one token to SQLite's unicode61 and
    # to PostgreSQL's default parser, so its inner word 講義 is not found there (a prefix of
    # the run, 日本語, is). Such a query still runs without error.
    assert joined not in await ids_of(library, q="講義")
    # Accent folding differs: SQLite's FTS5 (remove_diacritics) folds, PostgreSQL's
    # 'english' configuration (no unaccent) does not.
    folded = await ids_of(library, q="cafe")
    assert folded == ({cafe} if library.dialect == "sqlite" else set())


# -- cursor pagination ---------------------------------------------------------------------

SORT_KEYS: dict[str, Callable[[Media], Any]] = {
    "createdAt": lambda m: m.created_at,
    "title": lambda m: m.title,
    # SORTS["duration"] is coalesce(duration, -1): media without a duration come first.
    "duration": lambda m: -1.0 if m.duration is None else m.duration,
}


async def test_cursor_pagination_every_sort(library: Library) -> None:
    # Titles and times repeat so the id tiebreak decides; ASCII titles of both cases. The
    # expected order is Python's (code points), which the database's collation matches on
    # SQLite (binary) and on a PostgreSQL database with the C collation (the test server's
    # C.UTF-8). Under a linguistic collation (en_US...) text sorts differently; the walk must
    # then still match the database's own single-page order.
    codepoint_order = True
    if library.dialect == "postgresql":
        async with library.engine.connect() as conn:
            collation = (await conn.execute(text(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()"))
            ).scalar_one()
        codepoint_order = collation in ("C", "POSIX") or collation.startswith("C.")
    titles = ["Alpha", "beta", "Alpha", "gamma", "Beta"]
    base = 1_700_000_000.123456
    for n in range(25):
        media_id = await library.create_media(title=titles[n % 5] + ("" if n % 3 else " x"),
                                              type="video")
        values: dict[str, Any] = {"created_at": base + (n // 4) * 0.5}  # runs of 4 equal
        if n % 4:  # every 4th has no duration; others repeat too
            values["duration"] = float((n * 7) % 5) + 0.25
        assert await library.update_media(media_id, values)
    all_media, _ = await library.list_media(MediaQuery(limit=100))
    assert len(all_media) == 25
    assert len({m.created_at for m in all_media}) < 25
    assert len({m.title for m in all_media}) < 25
    assert any(m.duration is None for m in all_media)

    for key, of in SORT_KEYS.items():
        for desc in (False, True):
            sort = ("-" if desc else "") + key
            expected = [m.id for m in sorted(all_media, key=lambda m: (of(m), m.id),
                                             reverse=desc)]
            if not codepoint_order:
                whole, _ = await library.list_media(MediaQuery(sort=sort, limit=100))
                expected = [m.id for m in whole]
            walked: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                page, cursor = await library.list_media(MediaQuery(sort=sort, limit=4,
                                                                   cursor=cursor))
                pages += 1
                assert len(page) == 4 or cursor is None
                walked += [m.id for m in page]
                if cursor is None:
                    break
                assert pages < 10
            assert pages == 7
            assert len(walked) == len(set(walked)) == 25
            assert walked == expected, sort

    # Filters and cursors combine.
    page, cursor = await library.list_media(MediaQuery(q="alpha", sort="title", limit=3))
    assert cursor is not None
    rest, end = await library.list_media(MediaQuery(q="alpha", sort="title", limit=100,
                                                    cursor=cursor))
    assert end is None
    alphas = sorted((m.title, m.id) for m in all_media if m.title.startswith("Alpha"))
    assert [(m.title, m.id) for m in page + rest] == alphas


async def test_tampered_cursor(library: Library) -> None:
    ids = [await library.create_media(title=f"t{n}", type="video") for n in range(3)]
    _, good = await library.list_media(MediaQuery(limit=1))
    assert good is not None
    _, title_cursor = await library.list_media(MediaQuery(limit=1, sort="title"))
    assert title_cursor is not None
    tampered = [
        "!!!not base64!!!", good[:-3], good + "x", "e30", "\u00e9t\u00e9",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'[1.0, "abc", "extra"]').decode(),
        base64.urlsafe_b64encode(b"[NaN, \"abc\"]").decode(),
        base64.urlsafe_b64encode(b"[Infinity, \"abc\"]").decode(),
        cursor_of(None, ids[0]), cursor_of([1], ids[0]), cursor_of(1.0, 5),
        cursor_of(True, ids[0]),  # bool is not a number here
        cursor_of(10 ** 400, ids[0]),  # overflowed float conversion in both drivers
        cursor_of("a string", ids[0]),  # text where createdAt is a number (PG: type error)
        cursor_of(1.0, "a\x00b"), cursor_of(1.0, "../../x"), cursor_of(1.0, "id\n"),
        title_cursor,  # a cursor of another sort
    ]
    accepted = []
    for cursor in tampered:
        try:
            await library.list_media(MediaQuery(limit=1, cursor=cursor))
        except CursorError:
            continue
        accepted.append(cursor)
    assert accepted == []
    for cursor in (good, cursor_of(1.0, ids[0])):  # a cursor of the createdAt kind
        with pytest.raises(CursorError):
            await library.list_media(MediaQuery(limit=1, sort="title", cursor=cursor))
    with pytest.raises(CursorError):
        await library.list_media(MediaQuery(limit=1, sort="title",
                                            cursor=cursor_of("t\x00", ids[0])))
    with pytest.raises(CursorError):
        await library.list_media(MediaQuery(sort="size"))
    page, _ = await library.list_media(MediaQuery(limit=5, cursor=good))
    assert len(page) == 2


# -- updates and deletes ---------------------------------------------------------------------

async def test_update_replaces_tags_and_search_follows(library: Library) -> None:
    media_id = await library.create_media(title="Orbital mechanics", type="video",
                                          tags=["oldtag", "space"])
    other = await library.create_media(title="Unrelated", type="video", tags=["oldtag"])
    assert await ids_of(library, q="oldtag") == {media_id, other}
    assert await library.update_media(media_id, {"title": "Celestial navigation",
                                                 "description": "stars"},
                                      tags=["newtag", "space", "newtag"])
    got = await library.get_media(media_id)
    assert got is not None and got.tags == ("newtag", "space") and got.updated_at >= \
        got.created_at
    assert await ids_of(library, q="oldtag") == {other}
    assert await ids_of(library, tag="oldtag") == {other}
    assert await ids_of(library, q="newtag") == {media_id}
    assert await ids_of(library, tag="newtag") == {media_id}
    assert await ids_of(library, q="orbital") == set()
    assert await ids_of(library, q="celestial stars") == {media_id}
    # Without tags=..., tags stay; with tags=[], they go.
    assert await library.update_media(media_id, {"language": "en"})
    assert (await library.get_media(media_id)).tags == ("newtag", "space")  # type: ignore
    assert await library.update_media(media_id, {}, tags=[])
    assert (await library.get_media(media_id)).tags == ()  # type: ignore[union-attr]
    assert await ids_of(library, q="newtag") == set()
    assert not await library.update_media("missing", {"title": "x"})


async def test_delete_cascades(library: Library) -> None:
    media_id = await library.create_media(title="Doomed lecture", type="video",
                                          tags=["a", "b"])
    keep = await library.create_media(title="Kept lecture", type="video", tags=["a"])
    number = await library.add_generation(media_id, f"media/{media_id}/g1/original.mp4",
                                          "in.mp4", 123)
    await library.publish(media_id, number, [
        Asset("rendition", "360p", "mp4", f"media/{media_id}/g1/360p.mp4", 100, number),
        Asset("thumbnail", "t0", "jpg", f"media/{media_id}/g1/t0.jpg", 10, number)], {})
    job = await library.create_job(media_id, number, "process", {})
    await library.add_history(media_id, "uploaded", {"size": 123}, job.id)
    for table in ("media_tags", "generations", "assets", "jobs", "history"):
        assert await count(library, table, media_id) > 0, table
    assert await ids_of(library, q="doomed") == {media_id}

    assert await library.delete_media(media_id)
    for table in ("media_tags", "generations", "assets", "jobs", "history"):
        assert await count(library, table, media_id) == 0, table
    assert await library.get_media(media_id) is None
    assert await library.get_job(job.id) is None
    assert await library.playable(media_id) is None
    assert await library.storage_keys(media_id) == []
    assert await ids_of(library, q="lecture") == {keep}
    assert await ids_of(library, tag="a") == {keep}
    if library.dialect == "sqlite":
        async with library.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT media_id FROM media_fts"))).scalars()
            assert list(rows) == [keep]
    assert not await library.delete_media(media_id)
    assert await library.get_media(keep) is not None


# -- jobs ----------------------------------------------------------------------------------

async def test_start_job_is_exclusive(library: Library) -> None:
    media_id = await library.create_media(title="Job target", type="video")
    job = await library.create_job(media_id, 1, "process", {"quality": ["360p"]}, priority=3)
    assert (job.status, job.attempts, job.priority, job.stage) == ("queued", 0, 3, "queued")

    started = await asyncio.gather(*[library.start_job(job.id, f"worker-{n}", 60.0)
                                     for n in range(10)])
    winners = [j for j in started if j is not None]
    assert len(winners) == 1
    running = winners[0]
    assert (running.status, running.attempts, running.stage) == ("running", 1, "validation")
    assert running.heartbeat_at is not None and running.started_at is not None

    # A live worker keeps it: the heartbeat is fresh.
    assert await library.heartbeat(job.id, "someone-else") == "running"
    assert await library.start_job(job.id, "intruder", 60.0) is None
    assert (await library.get_job(job.id)).attempts == 1  # type: ignore[union-attr]

    # The worker died: its heartbeat goes stale and another may take the job over.
    await asyncio.sleep(0.1)
    again = await library.start_job(job.id, "rescuer", 0.05)
    assert again is not None and again.status == "running" and again.attempts == 2
    assert again.heartbeat_at is not None and again.heartbeat_at > running.heartbeat_at
    # The dead worker's heartbeat doesn't refresh a job it lost.
    before = again.heartbeat_at
    assert await library.heartbeat(job.id, "worker-x") == "running"
    assert (await library.get_job(job.id)).heartbeat_at == before  # type: ignore[union-attr]

    assert await library.start_job("no-such-job", "w", 0.0) is None
    assert await library.finish_job(job.id, "completed")
    assert not await library.finish_job(job.id, "completed")  # only once
    assert not await library.finish_job(job.id, "failed", {"code": "late"})
    done = await library.get_job(job.id)
    assert done is not None and (done.status, done.stage, done.percentage, done.error) == (
        "completed", "done", 100.0, None)
    assert done.completed_at is not None and done.finished
    assert await library.start_job(job.id, "late", 0.0) is None  # finished: never again
    assert not await library.requeue_job(job.id)  # completed: not requeued


async def test_cancel_progress_and_requeue(library: Library) -> None:
    media_id = await library.create_media(title="Job target", type="video")
    job = await library.create_job(media_id, 1, "process", {})
    assert not await library.requeue_job(job.id)  # queued
    assert await library.start_job(job.id, "w1", 60.0) is not None
    assert not await library.requeue_job(job.id)  # running
    assert await library.progress(job.id, "transcoding", 40.0, {"rendition": "360p"}) == \
        "running"
    mid = await library.get_job(job.id)
    assert mid is not None and (mid.stage, mid.percentage, mid.details) == (
        "transcoding", 40.0, {"rendition": "360p"})

    assert await library.finish_job(job.id, "cancelled", {"code": "cancelled",
                                                          "message": "by user"})
    assert await library.progress(job.id, "packaging", 90.0) == "cancelled"
    assert await library.heartbeat(job.id, "w1") == "cancelled"
    cancelled = await library.get_job(job.id)
    assert cancelled is not None and (cancelled.status, cancelled.stage,
                                      cancelled.percentage) == ("cancelled", "transcoding", 40.0)
    assert not await library.finish_job(job.id, "completed")

    assert await library.requeue_job(job.id)
    requeued = await library.get_job(job.id)
    assert requeued is not None
    assert (requeued.status, requeued.stage, requeued.percentage, requeued.error,
            requeued.completed_at, requeued.started_at, requeued.attempts) == (
        "queued", "queued", 0.0, None, None, None, 1)
    assert not await library.requeue_job(job.id)  # already queued
    retried = await library.start_job(job.id, "w2", 60.0)
    assert retried is not None and retried.attempts == 2
    assert await library.finish_job(job.id, "failed", {"code": "not_media", "message": "x"})
    failed = await library.get_job(job.id)
    assert failed is not None and failed.error == {"code": "not_media", "message": "x"}
    assert await library.requeue_job(job.id)
    assert await library.progress("no-such-job", "x", 1.0) is None
    assert [j.id for j in await library.jobs(status=["queued"], media_id=media_id)] == [job.id]


# -- generations ---------------------------------------------------------------------------

def _assets(media_id: str, number: int, names: list[str]) -> list[Asset]:
    out = [Asset("rendition", n, "mp4", f"media/{media_id}/g{number}/{n}.mp4", 1000 + i,
                 number, 640, 360, 800_000, None, i) for i, n in enumerate(names)]
    out.append(Asset("caption", "en", "vtt", f"media/{media_id}/g{number}/en.vtt", 50, number,
                     position=len(names)))
    out.append(Asset("thumbnail", "t0", "jpg", f"media/{media_id}/g{number}/t0.jpg", 20,
                     number, 320, 180, None, 1.5, len(names) + 1))
    return out


async def test_publish_swaps_generations(library: Library) -> None:
    media_id = await library.create_media(title="Versioned", type="video")
    assert await library.playable(media_id) is None
    g1 = await library.add_generation(media_id, f"media/{media_id}/g1/original.mp4",
                                      "v1.mp4", 111, {"format": "mp4"})
    assert g1 == 1
    await library.publish(media_id, g1, _assets(media_id, 1, ["360p", "720p"]),
                          {"duration": 6.0})
    first = await library.playable(media_id)
    assert first is not None
    old_files = (f"media/{media_id}/g1/360p.mp4", f"media/{media_id}/g1/720p.mp4")
    assert first.files == old_files and first.title == "Versioned"
    assert [(c.language, c.storage_key) for c in first.captions] == [
        ("en", f"media/{media_id}/g1/en.vtt")]

    g2 = await library.add_generation(media_id, f"media/{media_id}/g2/original.mkv",
                                      "v2.mkv", 222)
    assert g2 == 2
    assert (await library.playable(media_id)).files == old_files  # type: ignore[union-attr]
    new_assets = _assets(media_id, 2, ["480p"])
    new_files = (f"media/{media_id}/g2/480p.mp4",)

    seen: list[tuple[str, ...] | None] = []

    async def watch() -> None:
        for _ in range(15):
            item = await library.playable(media_id)
            seen.append(item.files if item else None)
            await asyncio.sleep(0)

    await asyncio.gather(watch(), library.publish(media_id, g2, new_assets,
                                                  {"duration": 7.5}))
    assert set(seen) <= {old_files, new_files}  # never nothing, never a mix

    now = await library.playable(media_id)
    assert now is not None and now.files == new_files
    media = await library.get_media(media_id)
    assert media is not None and (media.generation, media.status, media.duration) == (
        2, "ready", 7.5)
    assert {a.storage_key for a in media.assets} == {a.storage_key for a in new_assets}
    assert [(g.generation, g.status) for g in media.generations] == [(1, "ready"),
                                                                     (2, "ready")]
    # The previous generation's files stay listed and servable until purged.
    old = await library.asset(media_id, old_files[0])
    assert old is not None and old.generation == 1 and old.name == "360p"
    keys = await library.storage_keys(media_id)
    g1_keys = {f"media/{media_id}/g1/original.mp4", *old_files,
               f"media/{media_id}/g1/en.vtt", f"media/{media_id}/g1/t0.jpg"}
    g2_keys = {f"media/{media_id}/g2/original.mkv", *(a.storage_key for a in new_assets)}
    assert len(keys) == len(set(keys)) and set(keys) == g1_keys | g2_keys
    assert set(await library.storage_keys(media_id, 1)) == g1_keys
    assert set(await library.storage_keys(media_id, 2)) == g2_keys

    await library.purge_generation(media_id, 1)
    assert await library.asset(media_id, old_files[0]) is None
    assert (await library.generation(media_id, 1)).status == "purged"  # type: ignore
    assert set(await library.storage_keys(media_id, 1)) == {
        f"media/{media_id}/g1/original.mp4"}  # the source row remains, its assets are gone
    assert (await library.playable(media_id)).files == new_files  # type: ignore[union-attr]

    # Publishing the same generation again (reprocess) replaces its assets.
    await library.publish(media_id, g2, _assets(media_id, 2, ["240p", "480p"]), {})
    assert (await library.playable(media_id)).files == (  # type: ignore[union-attr]
        f"media/{media_id}/g2/240p.mp4", f"media/{media_id}/g2/480p.mp4")
    assert len(await library.storage_keys(media_id, 2)) == 5


# -- an origin on PostgreSQL, end to end ---------------------------------------------------

async def test_origin_on_postgresql_end_to_end(postgres_url: str, tmp_path: Path,
                                               compliant_mp4: Path) -> None:
    engine = await open_database(postgres_url, tmp_path)
    _migrated.add(postgres_url)
    try:
        await _clean(engine)
    finally:
        await engine.dispose()
    origin = OriginThread(library_config(tmp_path, library={"url": postgres_url})).start()
    try:
        async with aiohttp.ClientSession(origin.base, headers=auth()) as http:
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(compliant_mp4.read_bytes()), filename="lecture.mp4",
                           content_type="video/mp4")
            form.add_field("metadata", json.dumps({"title": "Quaternion Kinematics Seminar"}),
                           content_type="application/json")
            form.add_field("processing", json.dumps({"quality": ["360p"],
                                                     "thumbnails": False}),
                           content_type="application/json")
            async with http.post("/api/media/upload", data=form) as resp:
                assert resp.status == 201, await resp.text()
                media_id = (await resp.json())["id"]
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"/api/media/{media_id}/status") as resp:
                    status = await resp.json()
                if status["status"] != "processing":
                    break
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.2)
            assert status["status"] == "ready", status
            async with http.get("/api/media", params={"q": "quaternion"}) as resp:
                assert resp.status == 200
                assert [m["id"] for m in (await resp.json())["items"]] == [media_id]
            async with http.get("/api/media", params={"q": "kinemat semin"}) as resp:
                assert [m["id"] for m in (await resp.json())["items"]] == [media_id]
            for params in ({"q": "nothingmatches"}, {"tag": "x\x00"},
                           {"language": "\x00"}):
                async with http.get("/api/media", params=params) as resp:
                    assert resp.status == 200, (params, await resp.text())
                    assert (await resp.json())["items"] == []
            async with http.get("/api/media", params={"cursor": cursor_of("x", "y")}) as resp:
                assert resp.status == 400  # a tampered cursor is the client's error, not 500
            async with http.get(f"/vod/{media_id}/master.m3u8") as resp:
                assert resp.status == 200
                assert (await resp.text()).startswith("#EXTM3U")
        engine = await open_database(postgres_url, tmp_path, auto_migrate=False)
        try:
            lib = Library(engine)
            media = await lib.get_media(media_id)
            assert media is not None and media.generation == 1 and media.status == "ready"
            assert lib.dialect == "postgresql"
        finally:
            await engine.dispose()
    finally:
        origin.stop()


def test_new_ids_never_read_as_command_line_options() -> None:
    """Ids go onto command lines (`mediaorigin token --media <id>`): none starts with '-'
    (nor '_'); 2,000 of them, where a leading '-' used to come once in 64."""
    ids = [new_id() for _ in range(2000)]
    assert all(len(i) == 12 and i[0].isalnum() for i in ids)
    assert len(set(ids)) == len(ids)
