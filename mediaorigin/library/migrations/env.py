"""Alembic environment: migrations run on a connection handed over by `library.db.migrate`
(or, from the alembic CLI, on `sqlalchemy.url` from alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mediaorigin.library.schema import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # alembic CLI: a synchronous URL such as sqlite:///var/library.sqlite3
        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            _migrate(connection)
        return
    _migrate(connection)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
