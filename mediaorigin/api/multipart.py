"""Receive `POST /api/media/upload`: a multipart body streamed to a spool file in bounded memory.

Parts may come in any order: `file` (the media, streamed in 256 KiB chunks straight to disk),
`metadata` and `processing` (small JSON texts). Nothing is buffered beyond one chunk, so a 4 GB
upload costs a few MB of RAM. A client that disconnects or exceeds the size limit leaves nothing
behind: the spool file is removed. The file is fsynced before the 201, so an accepted upload
survives a crash of the process or the machine.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from .errors import ApiError
from .validation import MAX_JSON_FIELD, load_json_object

CHUNK = 256 * 1024


@dataclass
class ReceivedUpload:
    path: Path  # spool file in the uploads folder; the caller moves it into storage
    file_name: str
    size: int
    metadata: dict[str, Any]
    processing: dict[str, Any]


async def _read_small(part: BodyPartReader, name: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > MAX_JSON_FIELD:
            raise ApiError(413, "too_large", f"{name}: larger than {MAX_JSON_FIELD} bytes")
    return bytes(data)


async def receive_upload(request: web.Request, spool_dir: Path, max_bytes: int
                         ) -> ReceivedUpload:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "unsupported_media_type",
                       "upload as multipart/form-data with file, metadata and processing")
    if request.content_length is not None and request.content_length > max_bytes + 1024 * 1024:
        raise ApiError(413, "too_large", f"uploads are limited to {max_bytes} bytes")
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"multipart-{secrets.token_hex(12)}"
    file_name, size, seen_file = "", 0, False
    fields: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_multipart", "nested multipart is not accepted")
            if part.name == "file":
                if seen_file:
                    raise ApiError(400, "invalid_multipart", "send exactly one file part")
                seen_file = True
                file_name = os.path.basename(part.filename or "upload")[:200]
                with open(path, "wb") as out:
                    while chunk := await part.read_chunk(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ApiError(413, "too_large",
                                           f"uploads are limited to {max_bytes} bytes")
                        out.write(chunk)
                    # On disk before we answer 201: an accepted upload survives a crash.
                    out.flush()
                    await asyncio.to_thread(os.fsync, out.fileno())
            elif part.name in ("metadata", "processing"):
                fields[part.name] = await _read_small(part, part.name)
            else:
                raise ApiError(400, "invalid_multipart",
                               f"unexpected part {str(part.name)[:40]!r}: send file, metadata, "
                               "processing")
        if not seen_file:
            raise ApiError(400, "missing_file", "the multipart body has no file part")
        if size == 0:
            raise ApiError(422, "empty_file", "the uploaded file is empty")
        metadata = load_json_object(fields.get("metadata"), "metadata")
        processing = load_json_object(fields.get("processing"), "processing")
    except BaseException as e:
        path.unlink(missing_ok=True)
        if isinstance(e, ValueError) and not isinstance(e, ApiError):
            raise ApiError(400, "invalid_multipart", "the multipart body is malformed") from None
        raise
    return ReceivedUpload(path, file_name, size, metadata, processing)
