"""HTTP semantics CDNs rely on: conditional requests, ranges, caching headers, JSON errors."""

from __future__ import annotations

import asyncio
import re
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from aiohttp import web

from .growing import GrowingResponse
from .playback import Body, Data

SEGMENT_CACHE = "public, max-age=31536000, immutable"
MANIFEST_CACHE = "public, max-age=10"  # VOD manifests change only if the media is replaced
LARGE_BODY = 1 << 20  # aiohttp's limit for raw-bytes bodies (payload.TOO_LARGE_BYTES_BODY)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates


def _not_modified_since(request: web.Request, last_modified: float) -> bool:
    header = request.headers.get("If-Modified-Since")
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    return int(last_modified) <= since


def parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """(start, end exclusive) for a single satisfiable range; None to ignore the header;
    False when unsatisfiable (416)."""
    m = _RANGE.match(header.strip())
    if m is None:
        return None  # multi-range or malformed: serve the whole body (allowed by RFC 9110)
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        return False
    return start, end


async def respond(request: web.Request, body: Body) -> web.StreamResponse:
    """Serve a body with ETag/Last-Modified, 304, Range (206/416), HEAD and cache headers."""
    headers = {
        "ETag": body.etag,
        "Last-Modified": formatdate(body.last_modified, usegmt=True),
        "Cache-Control": SEGMENT_CACHE if body.immutable else MANIFEST_CACHE,
        "Accept-Ranges": "bytes",
    }
    inm = request.headers.get("If-None-Match")
    if (inm is not None and _etag_matches(inm, body.etag)) or (
        inm is None and _not_modified_since(request, body.last_modified)
    ):
        return web.Response(status=304, headers=headers)
    size = body.content.size
    start, end, status = 0, size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == body.etag):
        parsed = parse_range(range_header, size)
        if parsed is False:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        if parsed is not None:
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Type"] = body.content_type
    if body.growing is not None and status == 200:
        return GrowingResponse(body.growing, status, headers)
    data = await body.growing.whole() if body.growing is not None else body.content.data
    if data is not None:
        part = data if (start, end) == (0, size) else data[start:end]
        if end - start > LARGE_BODY:
            return MemoryResponse(part, status, headers)
        # Said outright: aiohttp learns a memoryview body's length (an encrypted segment's
        # buffer) only as it sends it, and metrics and analytics read it before.
        headers["Content-Length"] = str(end - start)
        return web.Response(status=status, headers=headers, body=part)
    assert body.content.path is not None
    return SendfileResponse(body.content.path, start, end - start, status, headers)


class MemoryResponse(web.StreamResponse):
    """A large in-memory body (a cold segment), written once the headers are out. (As a
    web.Response body, aiohttp warns about more than LARGE_BODY bytes given as raw bytes,
    although writing them only hands them to the transport's buffer.)"""

    def __init__(self, data: Data, status: int, headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self._data = data
        self.content_length = len(data)

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]  # noqa: ANN201
        writer = await super().prepare(request)
        if request.method != "HEAD":
            await self.write(self._data)
            await self.write_eof()
        return writer


class SendfileResponse(web.StreamResponse):
    """A file region sent with sendfile(2): the warm-segment path copies nothing in Python."""

    def __init__(self, path: Path, offset: int, count: int, status: int,
                 headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self._path = path
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]  # noqa: ANN201
        try:
            fobj = open(self._path, "rb")  # noqa: SIM115  # a cached file: no blocking worth a thread
        except FileNotFoundError:
            # Evicted between lookup and send; the client retries and we re-package.
            self.set_status(503)
            self.content_length = 0
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if request.method == "HEAD" or self._count == 0:
                return writer
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            loop = asyncio.get_running_loop()
            try:
                await loop.sendfile(transport, fobj, self._offset, self._count)
            except NotImplementedError:
                fobj.seek(self._offset)
                remaining = self._count
                while remaining:
                    chunk = fobj.read(min(remaining, 256 * 1024))
                    if not chunk:
                        break
                    await writer.write(chunk)
                    remaining -= len(chunk)
            await super().write_eof()
            return writer
        finally:
            fobj.close()


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past `limit` (read no further).

    `StreamReader.read(n)` returns what has arrived so far, not n bytes, so a size check on
    one read would pass a large body cut short."""
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)
