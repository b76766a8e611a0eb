"""Caches on the playback path: parsed indexes and packaged segments.

Both have a memory tier (LRU) and a disk tier under `storage.cache_dir`. Disk files are
written to a temporary name and renamed, so a crash never leaves a half-written entry that
could be served. Blocking methods are called from worker threads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ..packaging.model import MediaError, MediaIndex
from ..packaging.mp4 import serial
from ..packaging.mp4.index import index_file
from ..storage.local import FileStat, LocalStorage

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A thread-safe LRU bounded by the sum of entry weights."""

    def __init__(self, capacity: int, weigh: Callable[[V], int] = lambda v: 1) -> None:
        self.capacity = capacity
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        w = self._weigh(value)
        if w > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= self._weigh(old)
            self._items[key] = value
            self._weight += w
            while self._weight > self.capacity:
                _, evicted = self._items.popitem(last=False)
                self._weight -= self._weigh(evicted)

    def __len__(self) -> int:
        return len(self._items)

    def discard(self, keep: Callable[[K], bool]) -> None:
        """Drop every entry whose key `keep` rejects."""
        with self._lock:
            for key in [k for k in self._items if not keep(k)]:
                self._weight -= self._weigh(self._items.pop(key))


class IndexCache:
    """Indexes by storage key, re-parsed only when the file's fingerprint changes."""

    def __init__(self, storage: LocalStorage, cache_dir: Path, entries: int) -> None:
        self.storage = storage
        self.dir = cache_dir / "index"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.memory: LRU[str, tuple[str, MediaIndex]] = LRU(entries)
        self.parses = 0  # observable in tests: how often a moov was actually parsed

    def get(self, key: str, stat: FileStat) -> MediaIndex:
        fp = stat.fingerprint
        hit = self.memory.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
        path = self.dir / (hashlib.sha256(key.encode()).hexdigest() + ".moix")
        index: MediaIndex | None = None
        try:
            index = serial.loads(path.read_bytes(), fp)
        except (OSError, MediaError, KeyError, ValueError):
            index = None
        if index is None:
            index = self._parse(key, stat)
            _atomic_write(path, serial.dumps(index, fp))
        self.memory.put(key, (fp, index))
        return index

    def forget(self, key: str) -> None:
        self.memory.discard(lambda k: k != key)
        (self.dir / (hashlib.sha256(key.encode()).hexdigest() + ".moix")).unlink(missing_ok=True)

    def _parse(self, key: str, stat: FileStat) -> MediaIndex:
        self.parses += 1
        fd = os.open(self.storage.resolve(key), os.O_RDONLY)
        try:
            return index_file(lambda off, n: os.pread(fd, n, off), stat.size)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class CachedBody:
    """A packaged response body held in memory, or the file on disk that holds it."""

    data: bytes | memoryview | None
    path: Path | None
    size: int


class SegmentCache:
    """Packaged segments: memory LRU first, then files on disk (served with sendfile).

    Keys start with the media id (`{media_id}/...`); on disk each media item has its own
    folder, so deleting a media item drops its segments in one go.
    """

    def __init__(self, cache_dir: Path, memory_bytes: int, disk_bytes: int) -> None:
        self.dir = cache_dir / "segments"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.memory: LRU[str, bytes | memoryview] = LRU(memory_bytes, len)
        self.disk_bytes = disk_bytes
        self._disk_used: int | None = None  # measured at the first write, not at start-up
        self._lock = threading.Lock()
        # Lookups answered from memory, from disk, or not at all (for /metrics).
        self.hits_memory = self.hits_disk = self.misses = 0

    def _path(self, key: str) -> Path:
        media_id = key.split("/", 1)[0]
        return self.dir / media_id / hashlib.sha256(key.encode()).hexdigest()

    def forget(self, media_id: str) -> None:
        """Drop every cached segment of a media item (memory and disk)."""
        self.memory.discard(lambda k: not k.startswith(media_id + "/"))
        shutil.rmtree(self.dir / media_id, ignore_errors=True)
        with self._lock:
            self._disk_used = None  # measured again at the next write

    def get(self, key: str) -> CachedBody | None:
        data = self.memory.get(key)
        if data is not None:
            self.hits_memory += 1
            return CachedBody(data, None, len(data))
        if self.disk_bytes <= 0:
            self.misses += 1
            return None
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            self.misses += 1
            return None
        self.hits_disk += 1
        return CachedBody(None, path, size)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.memory.put(key, data)
        if self.disk_bytes <= 0 or len(data) > self.disk_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        if self._disk_used is None:
            # Files left by earlier runs and other workers count against the budget too.
            used = sum(size for _, size, _ in self._files())
            with self._lock:
                self._disk_used = used
        with self._lock:
            self._disk_used = (self._disk_used or 0) + len(data)
            over = self._disk_used > self.disk_bytes
        if over:
            self._trim()

    def _files(self) -> list[tuple[int, int, Path]]:
        """(mtime, size, path) of every cached file; temporary files are not ours to judge."""
        files = []
        for sub in self.dir.iterdir():
            for f in sub.iterdir():
                if f.name.startswith("."):
                    continue
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                files.append((st.st_mtime_ns, st.st_size, f))
        return files

    def _trim(self) -> None:
        """Drop the least recently written files until under 80% of the budget."""
        files = sorted(self._files())
        used = sum(size for _, size, _ in files)
        for _, size, f in files:
            if used <= self.disk_bytes * 0.8:
                break
            f.unlink(missing_ok=True)
            used -= size
        with self._lock:
            self._disk_used = used


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
