"""A minimal media catalog in SQLite: which stored files and captions make up a media item.

Blocking by design (sqlite3); async callers go through `asyncio.to_thread`. The library
issue replaces this with the full Media/MediaJob model.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS media_files (
    media_id TEXT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    storage_key TEXT NOT NULL,
    PRIMARY KEY (media_id, position)
);
CREATE TABLE IF NOT EXISTS captions (
    media_id TEXT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    language TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    PRIMARY KEY (media_id, position)
);
"""


@dataclass(frozen=True)
class Caption:
    language: str  # BCP 47 as given at import (en, de, pt-BR)
    storage_key: str


@dataclass(frozen=True)
class MediaItem:
    id: str
    title: str
    files: tuple[str, ...]  # storage keys; several files are renditions of one ladder
    captions: tuple[Caption, ...] = field(default_factory=tuple)
    created_at: float = 0.0


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(9)

    def add(self, item: MediaItem) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT INTO media (id, title, created_at) VALUES (?, ?, ?)",
                                 (item.id, item.title, item.created_at or time.time()))
                self._db.executemany(
                    "INSERT INTO media_files (media_id, position, storage_key) VALUES (?, ?, ?)",
                    [(item.id, i, key) for i, key in enumerate(item.files)])
                self._db.executemany(
                    "INSERT INTO captions (media_id, position, language, storage_key) "
                    "VALUES (?, ?, ?, ?)",
                    [(item.id, i, c.language, c.storage_key) for i, c in enumerate(item.captions)])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, media_id: str) -> MediaItem | None:
        if not MEDIA_ID.match(media_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT id, title, created_at FROM media WHERE id = ?",
                                   (media_id,)).fetchone()
            if row is None:
                return None
            files = self._db.execute(
                "SELECT storage_key FROM media_files WHERE media_id = ? ORDER BY position",
                (media_id,)).fetchall()
            caps = self._db.execute(
                "SELECT language, storage_key FROM captions WHERE media_id = ? ORDER BY position",
                (media_id,)).fetchall()
        return MediaItem(row[0], row[1], tuple(f[0] for f in files),
                         tuple(Caption(lang, key) for lang, key in caps), row[2])

    def list(self, limit: int = 100) -> list[MediaItem]:
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM media ORDER BY created_at DESC LIMIT ?", (limit,))]
        return [item for i in ids if (item := self.get(i)) is not None]

    def find_by_title(self, title: str) -> MediaItem | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM media WHERE title = ? ORDER BY created_at "
                                   "LIMIT 1", (title,)).fetchone()
        return self.get(row[0]) if row else None
