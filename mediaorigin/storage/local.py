"""Local filesystem storage. Every path handed out is confined to the storage root.

Methods are blocking; the origin calls them from a thread pool.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class StorageError(Exception):
    """A path outside the root, or a file that is not there."""


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int
    inode: int

    @property
    def fingerprint(self) -> str:
        """Changes whenever the file is replaced or rewritten."""
        return f"{self.size}-{self.mtime_ns}-{self.inode}"


class LocalStorage:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def resolve(self, key: str) -> Path:
        """Map a storage key (relative path) to a file inside the root, or refuse."""
        if not key or "\0" in key or key.startswith(("/", "\\")):
            raise StorageError("invalid storage key")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError("storage key escapes the storage root")
        return path

    def stat(self, key: str) -> FileStat:
        try:
            st = os.stat(self.resolve(key))
        except FileNotFoundError:
            raise StorageError(f"missing stored file {key!r}") from None
        return FileStat(st.st_size, st.st_mtime_ns, st.st_ino)

    def read_spans(self, key: str, spans: list[tuple[int, int]]) -> list[bytes]:
        """Several reads with one open: the segment path's only file access."""
        fd = os.open(self.resolve(key), os.O_RDONLY)
        try:
            return [os.pread(fd, size, offset) for offset, size in spans]
        finally:
            os.close(fd)

    def read_text(self, key: str, limit: int = 8 * 1024 * 1024) -> str:
        path = self.resolve(key)
        if path.stat().st_size > limit:
            raise StorageError(f"{key!r} is larger than {limit} bytes")
        return path.read_text(encoding="utf-8-sig")

    def put_file(self, key: str, source: Path) -> FileStat:
        """Store a copy of `source` under `key` (a hard link when on the same filesystem)."""
        dest = self.resolve(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(4 * 1024 * 1024):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, dest)  # readers never see a half-written file
        return self.stat(key)

    def folder(self, prefix: str) -> Path:
        """A folder inside the root for a processing stage to write into (created)."""
        path = self.resolve(prefix)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def key_of(self, path: Path) -> str:
        """The storage key of a file inside the root."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise StorageError("path is outside the storage root")
        return resolved.relative_to(self.root).as_posix()

    def delete(self, key: str) -> None:
        self.resolve(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove a whole folder of stored files (a media item, a generation)."""
        shutil.rmtree(self.resolve(prefix), ignore_errors=True)
