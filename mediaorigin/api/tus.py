"""tus 1.0.0 resumable uploads (https://tus.io/protocols/resumable-upload) as aiohttp routes.

Core protocol plus the creation, creation-with-upload, creation-defer-length, termination,
checksum and expiration extensions. Upload state lives in TusStore files (tus_store.py); this
module only speaks HTTP. Bodies are streamed to disk in bounded memory and every byte that
arrived before a dropped connection is kept: that is what makes the upload resumable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from email.utils import formatdate
from typing import Any, BinaryIO

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .tus_store import TusStore, TusUpload, UploadLocked, encode_metadata, parse_metadata

__all__ = ["EXPOSED_HEADERS", "REQUEST_HEADERS", "TusRoutes", "TusStore", "TusUpload",
           "tus_routes"]

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation,creation-with-upload,creation-defer-length,termination,checksum,"
              "expiration")
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256")
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
CHUNK_SIZE = 256 * 1024

# Response headers a browser client must be allowed to read (Access-Control-Expose-Headers).
EXPOSED_HEADERS = ("Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length",
                   "Upload-Metadata", "Upload-Expires", "Tus-Resumable", "Tus-Version",
                   "Tus-Max-Size", "Tus-Extension", "Tus-Checksum-Algorithm", "Media-Id",
                   "Job-Id")
# Request headers a browser client must be allowed to send (Access-Control-Allow-Headers);
# methods: POST, HEAD, PATCH, DELETE, OPTIONS.
REQUEST_HEADERS = ("Tus-Resumable", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
                   "Upload-Offset", "Upload-Checksum", "Content-Type")

OnComplete = Callable[[TusUpload, web.Request], Awaitable[dict[str, str]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NUMBER = re.compile(r"[0-9]{1,19}")


class HTTPLocked(web.HTTPClientError):
    status_code = 423


class HTTPChecksumMismatch(web.HTTPClientError):
    status_code = 460


def _error(cls: type[web.HTTPException], code: str, message: str,
           headers: dict[str, str] | None = None, **kwargs: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": {"code": code, "message": message}}),
               content_type="application/json", headers=headers, **kwargs)


def _number(request: web.Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _NUMBER.fullmatch(value):
        raise _error(web.HTTPBadRequest, "invalid_header", f"{name} must be a non-negative integer")
    return int(value)


def _checksum(request: web.Request) -> tuple[str, bytes] | None:
    """Upload-Checksum: `<algorithm> <base64 digest>` of this request's body."""
    value = request.headers.get("Upload-Checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise _error(web.HTTPBadRequest, "unsupported_checksum",
                     f"checksum algorithm must be one of {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as e:
        raise _error(web.HTTPBadRequest, "invalid_checksum", "checksum is not base64") from e


def _tus(handler: Handler, *, check_version: bool = True) -> Handler:
    """Every response carries Tus-Resumable; other protocol versions are refused with 412."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            if check_version and request.headers.get("Tus-Resumable") != TUS_VERSION:
                raise _error(web.HTTPPreconditionFailed, "unsupported_version",
                             f"Tus-Resumable: {TUS_VERSION} is required",
                             {"Tus-Version": TUS_VERSION})
            response = await handler(request)
        except web.HTTPException as e:  # ours, or one carried out of on_complete
            e.headers["Tus-Resumable"] = TUS_VERSION
            raise
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    return wrapper


class TusRoutes:
    """The tus endpoints for one store: `prefix` creates uploads, `prefix/{id}` serves one.

    on_complete runs once per upload, when its last byte is on disk; the headers it returns are
    added to that response (and to later HEADs). owner_of, if given, names the caller; uploads
    are then visible only to the caller that created them.
    """

    def __init__(self, prefix: str, store: TusStore, on_complete: OnComplete, *,
                 owner_of: Callable[[web.Request], str] | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.store = store
        self.on_complete = on_complete
        self.owner_of = owner_of
        # The per-upload lock of this process: a second writer is refused (423), not queued,
        # so chunks never interleave. The store's flock does the same across processes.
        self._writing: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        one = f"{self.prefix}/{{upload_id}}"
        return [
            web.options(self.prefix, _tus(self.options, check_version=False)),
            web.post(self.prefix, _tus(self.create)),
            web.options(one, _tus(self.options, check_version=False)),
            web.head(one, _tus(self.head)),
            web.patch(one, _tus(self.patch)),
            web.delete(one, _tus(self.terminate)),
        ]

    def add_routes(self, target: web.Application | web.UrlDispatcher) -> None:
        router = target.router if isinstance(target, web.Application) else target
        router.add_routes(self.routes())

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Max-Size": str(self.store.max_size),
            "Tus-Extension": EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        })

    async def create(self, request: web.Request) -> web.Response:
        length = self._creation_length(request)
        try:
            metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
        except ValueError as e:
            raise _error(web.HTTPBadRequest, "invalid_metadata", str(e)) from e
        with_body = request.body_exists
        if with_body and request.content_type != OFFSET_OCTET_STREAM:
            raise _error(web.HTTPUnsupportedMediaType, "unsupported_media_type",
                         f"an upload body must be {OFFSET_OCTET_STREAM}")
        checksum = _checksum(request)
        self._check_size(request, 0, length)
        owner = self.owner_of(request) if self.owner_of else ""
        upload = self.store.create(length, metadata, owner)
        # request.path includes any sub-application prefix, so Location works wherever the
        # routes are mounted.
        headers = {"Location": f"{request.path.rstrip('/')}/{upload.id}"}
        try:
            with self._locked(upload) as sink:
                if with_body:
                    upload = await self._receive(request, upload, sink, checksum)
                headers.update(await self._finish(request, upload, sink))
        except BaseException:
            # The client never learns the Location of a failed creation: nothing to resume.
            with contextlib.suppress(UploadLocked):
                await asyncio.to_thread(self.store.delete, upload.id)
            raise
        if with_body:
            headers["Upload-Offset"] = str(upload.offset)
        headers.update(self._progress(upload))
        return web.Response(status=201, headers=headers)

    async def head(self, request: web.Request) -> web.Response:
        upload = self._find(request)
        headers = {"Upload-Offset": str(upload.offset), "Cache-Control": "no-store"}
        if upload.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(upload.length)
        if upload.metadata:
            headers["Upload-Metadata"] = encode_metadata(upload.metadata)
        headers.update(self._progress(upload))
        if upload.complete:
            headers.update(self.store.completion(upload.id) or {})
        return web.Response(status=200, headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        upload = self._find(request)
        if request.content_type != OFFSET_OCTET_STREAM:
            raise _error(web.HTTPUnsupportedMediaType, "unsupported_media_type",
                         f"Content-Type must be {OFFSET_OCTET_STREAM}")
        offset = _number(request, "Upload-Offset")
        if offset is None:
            raise _error(web.HTTPBadRequest, "missing_offset", "Upload-Offset is required")
        length = _number(request, "Upload-Length")
        checksum = _checksum(request)
        with self._locked(upload) as sink:
            # Under the lock the file size is the authoritative offset.
            upload = replace(upload, offset=os.fstat(sink.fileno()).st_size)
            if offset != upload.offset:
                raise _error(web.HTTPConflict, "offset_mismatch",
                             f"Upload-Offset is {offset}, the upload is at {upload.offset}")
            if length is not None and length != upload.length:
                upload = self._set_length(upload, length)
            self._check_size(request, upload.offset, upload.length)
            upload = await self._receive(request, upload, sink, checksum)
            completed = await self._finish(request, upload, sink)
        return web.Response(status=204, headers={"Upload-Offset": str(upload.offset),
                                                 **self._progress(upload), **completed})

    async def terminate(self, request: web.Request) -> web.Response:
        upload = self._find(request, expired_ok=True)
        if upload.id in self._writing:
            raise _error(HTTPLocked, "locked", "the upload is being written")
        try:
            await asyncio.to_thread(self.store.delete, upload.id)
        except UploadLocked as e:
            raise _error(HTTPLocked, "locked", "the upload is being written") from e
        return web.Response(status=204)

    def _find(self, request: web.Request, *, expired_ok: bool = False) -> TusUpload:
        upload = self.store.get(request.match_info["upload_id"])
        if upload is None or (self.owner_of and upload.owner != self.owner_of(request)):
            raise _error(web.HTTPNotFound, "not_found", "no such upload")
        if not expired_ok and not upload.complete and upload.expires <= time.time():
            raise _error(web.HTTPGone, "expired", "the upload expired")
        return upload

    def _creation_length(self, request: web.Request) -> int | None:
        length = _number(request, "Upload-Length")
        deferred = request.headers.get("Upload-Defer-Length")
        if deferred is not None:
            if deferred != "1" or length is not None:
                raise _error(web.HTTPBadRequest, "invalid_length",
                             "send either Upload-Length or Upload-Defer-Length: 1")
            return None
        if length is None:
            raise _error(web.HTTPBadRequest, "missing_length",
                         "Upload-Length or Upload-Defer-Length: 1 is required")
        if length > self.store.max_size:
            raise _error(web.HTTPRequestEntityTooLarge, "too_large",
                         f"uploads are limited to {self.store.max_size} bytes",
                         max_size=self.store.max_size, actual_size=length)
        return length

    def _set_length(self, upload: TusUpload, length: int) -> TusUpload:
        if upload.length is not None:
            raise _error(web.HTTPBadRequest, "length_mismatch", "Upload-Length cannot change")
        if length < upload.offset:
            raise _error(web.HTTPBadRequest, "invalid_length", "Upload-Length is below the offset")
        if length > self.store.max_size:
            raise _error(web.HTTPRequestEntityTooLarge, "too_large",
                         f"uploads are limited to {self.store.max_size} bytes",
                         max_size=self.store.max_size, actual_size=length)
        self.store.set_length(upload.id, length)
        return replace(upload, length=length)

    def _limit(self, upload: TusUpload) -> int:
        return self.store.max_size if upload.length is None else upload.length

    def _check_size(self, request: web.Request, offset: int, length: int | None) -> None:
        """Refuse a declared body that cannot fit before reading a byte of it."""
        limit = self.store.max_size if length is None else length
        if request.content_length is not None and offset + request.content_length > limit:
            raise _error(web.HTTPRequestEntityTooLarge, "too_large",
                         f"the body would end at {offset + request.content_length}, "
                         f"beyond the upload length {limit}",
                         max_size=limit, actual_size=offset + request.content_length)

    @contextlib.contextmanager
    def _locked(self, upload: TusUpload) -> Iterator[BinaryIO]:
        if upload.id in self._writing:
            raise _error(HTTPLocked, "locked", "another request is writing to this upload")
        self._writing.add(upload.id)
        try:
            with self.store.open_append(upload.id) as sink:
                yield sink
        except UploadLocked as e:
            raise _error(HTTPLocked, "locked", "another request is writing to this upload") from e
        except FileNotFoundError as e:
            raise _error(web.HTTPNotFound, "not_found", "no such upload") from e
        finally:
            self._writing.discard(upload.id)

    async def _receive(self, request: web.Request, upload: TusUpload, sink: BinaryIO,
                       checksum: tuple[str, bytes] | None) -> TusUpload:
        """Append the body at the upload's offset, in bounded memory.

        A body that breaks the rules (too long, wrong checksum) is cut off the file again. A
        dropped connection keeps every byte that arrived, unless a checksum was promised: an
        incomplete chunk cannot be verified.
        """
        start = offset = upload.offset
        limit = self._limit(upload)
        digest = hashlib.new(checksum[0]) if checksum else None
        discard = checksum is not None
        try:
            async for chunk in request.content.iter_chunked(CHUNK_SIZE):
                if offset + len(chunk) > limit:
                    discard = True
                    raise _error(web.HTTPRequestEntityTooLarge, "too_large",
                                 f"the body goes beyond the upload length {limit}",
                                 max_size=limit, actual_size=offset + len(chunk))
                sink.write(chunk)
                sink.flush()  # on disk (in the page cache) before the next read can fail
                offset += len(chunk)
                if digest:
                    digest.update(chunk)
            if checksum and digest and digest.digest() != checksum[1]:
                raise _error(HTTPChecksumMismatch, "checksum_mismatch",
                             "the body does not match Upload-Checksum", reason="Checksum Mismatch")
            discard = False
        except (ConnectionResetError, HttpProcessingError) as e:
            raise _error(web.HTTPBadRequest, "incomplete_body", "the body ended early") from e
        finally:
            if discard:
                sink.truncate(start)
        return replace(upload, offset=offset)

    async def _finish(self, request: web.Request, upload: TusUpload,
                      sink: BinaryIO) -> dict[str, str]:
        """Run on_complete once the last byte is there; exactly once across retries, workers."""
        if not upload.complete:
            return {}
        if not self.store.claim_completion(upload.id):
            return self.store.completion(upload.id) or {}
        try:
            await asyncio.to_thread(os.fsync, sink.fileno())
            headers = await self.on_complete(upload, request)
        except BaseException:
            self.store.release_completion(upload.id)
            raise
        self.store.record_completion(upload.id, headers)
        return headers

    def _progress(self, upload: TusUpload) -> dict[str, str]:
        if upload.complete:
            return {}
        return {"Upload-Expires": formatdate(upload.expires, usegmt=True)}


def tus_routes(prefix: str, store: TusStore, on_complete: OnComplete, *,
               owner_of: Callable[[web.Request], str] | None = None) -> list[web.RouteDef]:
    """The tus route definitions, for `app.router.add_routes(...)` or a sub-application."""
    return TusRoutes(prefix, store, on_complete, owner_of=owner_of).routes()
