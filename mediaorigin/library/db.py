"""Database engine for the library: SQLite (aiosqlite) embedded, PostgreSQL (asyncpg) for many
nodes. `open_database` normalises the URL, tunes SQLite for several processes and brings the
schema up to date with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant: PostgreSQL advisory lock taken while migrating, so nodes starting together
# don't race each other.
_MIGRATION_LOCK = 0x6D6F_6C69


def async_url(url: str, base_dir: Path) -> str:
    """sqlite:///rel.db → sqlite+aiosqlite:///<base_dir>/rel.db; postgresql:// → asyncpg."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
        if u.database and u.database != ":memory:":
            path = Path(u.database).expanduser()
            if not path.is_absolute():
                path = base_dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            u = u.set(database=str(path))
    elif u.get_backend_name() == "postgresql":
        u = u.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {u.get_backend_name()!r}: use sqlite or "
                         "postgresql")
    return u.render_as_string(hide_password=False)


def create_engine(url: str, base_dir: Path) -> AsyncEngine:
    engine = create_async_engine(async_url(url, base_dir), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")  # other processes writing
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def open_database(url: str, base_dir: Path, auto_migrate: bool = True) -> AsyncEngine:
    engine = create_engine(url, base_dir)
    if auto_migrate:
        await migrate(engine)
    return engine
