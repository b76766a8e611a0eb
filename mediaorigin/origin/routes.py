"""Playback routes under /vod: thin handlers over `Playback`."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

from aiohttp import web

from ..auth.playback_guard import PlaybackGuard
from ..auth.viewers import ViewerSlots
from ..packaging import urls
from . import protection
from .http import read_body, respond
from .playback import Playback, PlaybackError, Prepared, parse_clip
from .served import GRANT, served

PLAYBACK = web.AppKey("playback", Playback)
MAX_LICENSE_REQUEST = 16 * 1024
GUARD = web.AppKey("playback_guard", PlaybackGuard)
VIEWERS = web.AppKey("viewer_slots", ViewerSlots)

MEDIA_ID = r"{media_id:[A-Za-z0-9_-]{1,64}}"
ENTRY = r"{name:master\.m3u8|master-ts\.m3u8|manifest\.mpd}"
RENDITION = f"{{rid:{urls.RENDITION_ID}}}"
CHILD = r"{name:[a-z0-9.-]{1,40}}"


def carried_query(request: web.Request) -> str:
    """The entry manifest's query, re-encoded canonically, to carry onto every child URL."""
    return urlencode(sorted(request.rel_url.query.items()))


async def authorized(request: web.Request) -> Prepared:
    """The prepared media item, once the request may play it (credentials, then rules)."""
    guard, media_id = request.app[GUARD], request.match_info["media_id"]
    guard.precheck(request)  # no credential at all: refused before the media is looked up
    q = request.rel_url.query
    prep = await request.app[PLAYBACK].prepare(media_id, parse_clip(q.get("start"),
                                                                    q.get("end")))
    grant = guard.authorize(request, media_id, prep.item.access, prep.item.organization_id)
    await request.app[VIEWERS].admit(grant, q.get("token"))
    request[GRANT] = grant  # for the analytics event of the response
    return prep


async def leave(request: web.Request) -> web.Response:
    """DELETE /vod/{id}/session: the viewer stopped; its stream slot is free at once."""
    guard, media_id = request.app[GUARD], request.match_info["media_id"]
    guard.precheck(request)
    prep = await request.app[PLAYBACK].prepare(media_id, None)
    grant = guard.authorize(request, media_id, prep.item.access, prep.item.organization_id)
    await request.app[VIEWERS].leave(grant, request.rel_url.query.get("token"))
    return web.Response(status=204)


async def entry_manifest(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    prep = await authorized(request)
    name = request.match_info["name"]
    body = await playback.entry_manifest(prep, name, carried_query(request))
    return served(request, await respond(request, body), prep.item.id, None, name)


async def child(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    prep = await authorized(request)
    rid, name = request.match_info["rid"], request.match_info["name"]
    body = await playback.child(prep, rid, name, carried_query(request))
    return served(request, await respond(request, body), prep.item.id, rid, name)


async def content_key(request: web.Request) -> web.Response:
    """GET /vod/{id}/key: the HLS AES-128 key, to authorized players only, never cached."""
    prep = await authorized(request)
    playback = request.app[PLAYBACK]
    content = await playback.content_key(prep.item.id)
    try:
        period = int(request.rel_url.query.get("period", "0"))
    except ValueError:
        period = -1
    if not 0 <= period < 1_000_000:
        raise PlaybackError(400, "invalid_period", "period is a key rotation period number")
    key = protection.hls_key(content, period, playback.key_rotation)
    return web.Response(body=key, content_type="application/octet-stream",
                        headers={"Cache-Control": "no-store"})


async def clearkey_license(request: web.Request) -> web.Response:
    """POST /vod/{id}/license/clearkey: a W3C ClearKey license (JSON Web Key set) for the
    key ids the player asks for, to authorized players only."""
    prep = await authorized(request)
    raw = await read_body(request, MAX_LICENSE_REQUEST)
    try:
        asked = json.loads(raw) if raw is not None else None
        kids = {_b64url_decode(k) for k in asked["kids"]} if isinstance(asked, dict) else None
    except (ValueError, TypeError, KeyError):
        kids = None
    if not kids:
        raise PlaybackError(400, "invalid_license_request",
                            'send {"kids": [base64url key ids], "type": "temporary"}')
    content = await request.app[PLAYBACK].content_key(prep.item.id)
    keys = [{"kty": "oct", "kid": _b64url(content.kid), "k": _b64url(content.key)}] \
        if content.kid in kids else []
    return web.json_response({"keys": keys, "type": "temporary"},
                             headers={"Cache-Control": "no-store"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("not a key id")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/vod/{MEDIA_ID}/key", content_key)
    app.router.add_delete(f"/vod/{MEDIA_ID}/session", leave)
    app.router.add_post(f"/vod/{MEDIA_ID}/license/clearkey", clearkey_license)
    app.router.add_get(f"/vod/{MEDIA_ID}/{ENTRY}", entry_manifest)
    app.router.add_get(f"/vod/{MEDIA_ID}/{RENDITION}/{CHILD}", child)
