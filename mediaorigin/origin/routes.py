"""Playback routes under /vod: thin handlers over `Playback`."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from ..packaging import urls
from .http import respond
from .playback import Playback, parse_clip

PLAYBACK = web.AppKey("playback", Playback)

MEDIA_ID = r"{media_id:[A-Za-z0-9_-]{1,64}}"
ENTRY = r"{name:master\.m3u8|master-ts\.m3u8|manifest\.mpd}"
RENDITION = f"{{rid:{urls.RENDITION_ID}}}"
CHILD = r"{name:[a-z0-9.-]{1,40}}"


def carried_query(request: web.Request) -> str:
    """The entry manifest's query, re-encoded canonically, to carry onto every child URL."""
    return urlencode(sorted(request.rel_url.query.items()))


async def entry_manifest(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    q = request.rel_url.query
    prep = await playback.prepare(request.match_info["media_id"],
                                  parse_clip(q.get("start"), q.get("end")))
    body = await playback.entry_manifest(prep, request.match_info["name"], carried_query(request))
    return await respond(request, body)


async def child(request: web.Request) -> web.StreamResponse:
    playback = request.app[PLAYBACK]
    q = request.rel_url.query
    prep = await playback.prepare(request.match_info["media_id"],
                                  parse_clip(q.get("start"), q.get("end")))
    body = await playback.child(prep, request.match_info["rid"], request.match_info["name"],
                                carried_query(request))
    return await respond(request, body)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/vod/{MEDIA_ID}/{ENTRY}", entry_manifest)
    app.router.add_get(f"/vod/{MEDIA_ID}/{RENDITION}/{CHILD}", child)
