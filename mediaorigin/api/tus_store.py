"""On-disk state of tus uploads: a data file and an info file per upload, no database.

Several worker processes may share `root`: ids are random and created with O_EXCL, info files
are replaced atomically, writers hold an flock on the data file, and completion is claimed by
creating `<id>.done` with O_EXCL. The offset is never stored: it is the data file's size, so a
crash mid-write leaves a valid prefix and HEAD reports exactly what is on disk.

    <id>.part   the bytes received so far (appended to, never rewritten)
    <id>.json   {"length", "metadata", "created", "expires", "owner"}; length null = deferred
    <id>.done   exists once completion was claimed; holds on_complete's headers when it returned
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{10,64}")
# Metadata keys: printable ASCII without space and comma (the pair and list separators).
KEY_PATTERN = re.compile(r"[\x21-\x2b\x2d-\x7e]+")


class UploadLocked(Exception):
    """Another request, in this process or another, is writing to or deleting the upload."""


@dataclass
class TusUpload:
    id: str
    length: int | None  # None while the length is deferred
    offset: int
    metadata: dict[str, str]
    path: Path  # the data file
    created: float
    expires: float
    owner: str = ""

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset >= self.length


def parse_metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: `key base64,key2 base64,key3`; a key without a value maps to ""."""
    metadata: dict[str, str] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition(" ")
        if not key and not value:
            continue
        if not KEY_PATTERN.fullmatch(key) or key in metadata:
            raise ValueError("metadata keys must be unique, non-empty, without spaces or commas")
        try:
            metadata[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ValueError(f"metadata value of {key} is not base64-encoded UTF-8") from e
    return metadata


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


class TusStore:
    """Blocking file operations on one upload directory; every call is short."""

    def __init__(self, root: Path, max_size: int, expiry_seconds: float = 86400) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self.expiry_seconds = expiry_seconds
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, upload_id: str, suffix: str) -> Path:
        # Every path goes through here, so an id can never name a file outside root.
        if not ID_PATTERN.fullmatch(upload_id):
            raise ValueError("invalid upload id")
        return self.root / f"{upload_id}{suffix}"

    def _write_json(self, path: Path, value: Any) -> None:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)  # readers see the old or the new file, never half of one

    def create(self, length: int | None, metadata: dict[str, str], owner: str = "",
               now: float | None = None) -> TusUpload:
        if length is not None and not 0 <= length <= self.max_size:
            raise ValueError("length out of range")
        upload_id = secrets.token_urlsafe(16)
        created = time.time() if now is None else now
        # The data file first: get() ignores it until the info file exists.
        os.close(os.open(self._file(upload_id, ".part"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600))
        info = {"length": length, "metadata": metadata, "created": created,
                "expires": created + self.expiry_seconds, "owner": owner}
        self._write_json(self._file(upload_id, ".json"), info)
        return TusUpload(upload_id, length, 0, metadata, self._file(upload_id, ".part"),
                         created, info["expires"], owner)

    def get(self, upload_id: str) -> TusUpload | None:
        """None for unknown or malformed ids, so callers answer 404 without touching the disk."""
        if not ID_PATTERN.fullmatch(upload_id):
            return None
        path = self._file(upload_id, ".part")
        try:
            info = json.loads(self._file(upload_id, ".json").read_bytes())
            offset = path.stat().st_size
        except (FileNotFoundError, ValueError):
            return None
        return TusUpload(upload_id, info["length"], offset, info["metadata"], path,
                         info["created"], info["expires"], info["owner"])

    def set_length(self, upload_id: str, length: int) -> None:
        """Fix a deferred length; call with the upload locked (see open_append)."""
        path = self._file(upload_id, ".json")
        info = json.loads(path.read_bytes())
        info["length"] = length
        self._write_json(path, info)

    @contextlib.contextmanager
    def open_append(self, upload_id: str) -> Iterator[BinaryIO]:
        """The data file opened for appending and locked against every other writer.

        Raises UploadLocked when another writer holds it and FileNotFoundError when the upload
        was deleted meanwhile. Flush after each write so a dropped connection keeps its bytes.
        """
        fd = os.open(self._file(upload_id, ".part"), os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "ab") as sink:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise UploadLocked(upload_id) from e
            if os.fstat(fd).st_nlink == 0:  # deleted between open and lock
                raise FileNotFoundError(upload_id)
            yield sink

    def claim_completion(self, upload_id: str) -> bool:
        """True for exactly one caller across retries and processes."""
        try:
            os.close(os.open(self._file(upload_id, ".done"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    def release_completion(self, upload_id: str) -> None:
        """Completion failed: let a retried request claim it again."""
        self._file(upload_id, ".done").unlink(missing_ok=True)

    def record_completion(self, upload_id: str, headers: dict[str, str]) -> None:
        self._write_json(self._file(upload_id, ".done"), headers)

    def completion(self, upload_id: str) -> dict[str, str] | None:
        """The completion headers; {} while on_complete runs, None before completion."""
        try:
            text = self._file(upload_id, ".done").read_text()
        except FileNotFoundError:
            return None
        return json.loads(text) if text else {}

    def delete(self, upload_id: str) -> bool:
        """Remove the upload's files; False if it did not exist. UploadLocked while written."""
        try:
            fd = os.open(self._file(upload_id, ".part"), os.O_RDONLY)
        except FileNotFoundError:
            return self._unlink(upload_id)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise UploadLocked(upload_id) from e
            return self._unlink(upload_id)
        finally:
            os.close(fd)

    def _unlink(self, upload_id: str) -> bool:
        existed = False
        for suffix in (".json", ".part", ".done"):  # info first: the upload vanishes at once
            with contextlib.suppress(FileNotFoundError):
                self._file(upload_id, suffix).unlink()
                existed = True
        return existed

    def expire(self, now: float | None = None) -> list[str]:
        """Remove incomplete uploads past their expiry (and leftovers of crashes); their ids."""
        now = time.time() if now is None else now
        removed = []
        for path in self.root.glob("*.part"):
            upload_id = path.stem
            if not ID_PATTERN.fullmatch(upload_id):
                continue
            upload = self.get(upload_id)
            if upload is None:  # no info file: a creation that crashed, or one just starting
                stale = _mtime(path) + self.expiry_seconds <= now
            else:
                stale = not upload.complete and upload.expires <= now
            if stale:
                with contextlib.suppress(UploadLocked):
                    if self.delete(upload_id):
                        removed.append(upload_id)
        for tmp in self.root.glob("*.tmp"):  # from a crash inside _write_json
            if _mtime(tmp) + self.expiry_seconds <= now:
                tmp.unlink(missing_ok=True)
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
