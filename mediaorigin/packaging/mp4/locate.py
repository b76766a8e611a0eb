"""Find the moov box of an MP4 without reading its media data (sans-IO).

The scanner asks for byte ranges and is fed their contents; the caller fetches them from a
file, an object store or a growing upload. A file with moov at the end costs one header read
per top-level box (ftyp, mdat, moov), never a read of mdat itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import MediaError
from .boxes import parse_header

MAX_MOOV = 512 * 1024 * 1024  # a moov larger than this is not a lecture, it is an attack
_HEADER_READ = 16


@dataclass(frozen=True)
class Read:
    offset: int
    size: int


class MoovScanner:
    """State machine: `next_read()` tells what to fetch, `feed()` gives it; then `.moov`."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.moov: bytes | None = None
        self.moov_offset = -1
        self._pos = 0
        self._moov_size = 0
        self._pending: Read | None = None
        self._seen_ftyp = False

    def next_read(self) -> Read | None:
        if self.moov is not None:
            return None
        if self._moov_size:
            self._pending = Read(self.moov_offset, self._moov_size)
        else:
            if self._pos >= self.file_size:
                raise MediaError("no moov box: not an MP4 file, or an incomplete upload")
            self._pending = Read(self._pos, min(_HEADER_READ, self.file_size - self._pos))
        return self._pending

    def feed(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            raise RuntimeError("feed() without next_read()")
        self._pending = None
        if len(data) < pending.size:
            raise MediaError(f"short read at offset {pending.offset}: file truncated")
        if self._moov_size:
            self.moov = bytes(data)
            return
        header = parse_header(data, 0, self.file_size - self._pos)
        if self._pos == 0 and header.type not in ("ftyp", "styp", "moov", "free", "skip",
                                                  "wide", "mdat", "pdin", "uuid"):
            raise MediaError("not an MP4 file (no ftyp box)")
        if header.type == "moov":
            if header.size > MAX_MOOV:
                raise MediaError(f"moov box of {header.size} bytes is too large")
            self.moov_offset = self._pos
            self._moov_size = header.size
        self._pos += header.size


def read_moov(read_at: Callable[[int, int], bytes], file_size: int) -> bytes:
    """Drive a MoovScanner with a blocking read function (offset, size) -> bytes."""
    scanner = MoovScanner(file_size)
    while (req := scanner.next_read()) is not None:
        scanner.feed(read_at(req.offset, req.size))
    assert scanner.moov is not None
    return scanner.moov
