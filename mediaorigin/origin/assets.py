"""`/vod/{id}/assets/g{n}/[{run}/]{name}`: the files processing made (renditions for download,
thumbnails, poster, preview, sprite sheets and their WebVTT track, documents).

A file is served only while the library lists it as an asset, so nothing half-written or
purged is reachable; URLs name the generation, so a response never changes: immutable.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os

from aiohttp import web

from ..library.repository import Library
from ..storage.local import LocalStorage, StorageError
from .cache import CachedBody
from .http import respond
from .playback import Body, PlaybackError
from .routes import GUARD

ASSET_LIBRARY = web.AppKey("asset_library", Library)
ASSET_STORAGE = web.AppKey("asset_storage", LocalStorage)
TYPES = {"vtt": "text/vtt; charset=utf-8", "m4a": "audio/mp4", "mp4": "video/mp4",
         "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "pdf": "application/pdf"}


async def asset(request: web.Request) -> web.StreamResponse:
    media_id, path = request.match_info["media_id"], request.match_info["path"]
    name = path.rsplit("/", 1)[-1]
    key = f"media/{media_id}/{path}"
    guard, library = request.app[GUARD], request.config_dict[ASSET_LIBRARY]
    guard.precheck(request)
    found = await library.asset(media_id, key)
    if found is None:
        raise PlaybackError(404, "asset_not_found", "no such asset")
    guard.authorize(request, media_id, *await library.access(media_id))
    storage = request.config_dict[ASSET_STORAGE]
    try:
        path = storage.resolve(key)
        st = os.stat(path)
    except (StorageError, FileNotFoundError):
        raise PlaybackError(404, "asset_not_found", "the asset's file is missing") from None
    ext = name.rsplit(".", 1)[-1].lower()
    content_type = TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    tag = hashlib.blake2b(f"{key}|{st.st_size}|{st.st_mtime_ns}".encode(), digest_size=10)
    body = Body(CachedBody(None, path, st.st_size), content_type, f'"{tag.hexdigest()}"',
                st.st_mtime, immutable=True)
    return await respond(request, body)


def add_asset_routes(app: web.Application) -> None:
    # g{n}/{name} (the upload, captions) or g{n}/{run}/{name} (what a processing run made)
    app.router.add_get(r"/vod/{media_id:[A-Za-z0-9_-]{1,64}}/assets/"
                       r"{path:g[0-9]{1,6}(?:/[A-Za-z0-9_-]{1,64}\.[0-9]{1,4})?"
                       r"/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}}", asset)
