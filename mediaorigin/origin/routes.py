"""Playback routes under /vod: thin handlers over `Playback`."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from ..auth.playback_guard import PlaybackGuard
from ..packaging import urls
from .http import respond
from .playback import Playback, Prepared, parse_clip

PLAYBACK = web.AppKey("playback", Playback)
GUARD = web.AppKey("playback_guard", PlaybackGuard)

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
    guard.authorize(request, media_id, prep.item.access)
    return prep


async def entry_manifest(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    prep = await authorized(request)
    body = await playback.entry_manifest(prep, request.match_info["name"], carried_query(request))
    return await respond(request, body)


async def child(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    prep = await authorized(request)
    body = await playback.child(prep, request.match_info["rid"], request.match_info["name"],
                                carried_query(request))
    return await respond(request, body)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/vod/{MEDIA_ID}/{ENTRY}", entry_manifest)
    app.router.add_get(f"/vod/{MEDIA_ID}/{RENDITION}/{CHILD}", child)
