"""Full-text queries: user text → an FTS5 MATCH (SQLite) or a tsquery (PostgreSQL).

User input never reaches the query syntax: it is cut into word tokens, each matched as a
prefix, all required (`intro lect` finds "Introduction to the lecture").
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, text

from . import schema

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TOKENS = 16


def tokens(q: str) -> list[str]:
    return _WORD.findall(q.lower())[:MAX_TOKENS]


def matches(dialect: str, q: str) -> ColumnElement[bool] | None:
    """A WHERE clause selecting media whose title, description or tags match `q`."""
    words = tokens(q)
    if not words:
        return None
    if dialect == "postgresql":
        query = " & ".join(f"{w}:*" for w in words)
        return text("media.search @@ to_tsquery('english', :fts_q)").bindparams(fts_q=query)
    query = " AND ".join(f'"{w}"*' for w in words)
    return schema.media.c.id.in_(
        text("SELECT media_id FROM media_fts WHERE media_fts MATCH :fts_q").bindparams(
            fts_q=query).columns(schema.media.c.id))
