"""Live playback routes under /live/{id}: LL-HLS, HLS (TS) and DASH, thin over `LiveChannel`.

Every request is authorized like VOD (token or signed URL, then the stream's access rules).
Playlists honour blocking reload (`_HLS_msn`, `_HLS_part`) and delta updates (`_HLS_skip`);
a part or segment that is announced but not yet there (the preload hint) is held until it
exists. Rendered playlists are cached per channel state, so a crowd of viewers waiting on the
same part costs one rendering.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from aiohttp import web

from ..errors import ClientError
from ..live.channel import LiveChannel
from ..live.hub import LiveHub
from ..packaging.dash.live import live_mpd
from ..packaging.hls import live as hls
from .metrics import ROUTE_LABEL
from .routes import GUARD, VIEWERS
from .served import GRANT, served

LIVE_HUB = web.AppKey("live_hub", LiveHub)
LIVE_ID = r"{live_id:live_[A-Za-z0-9_-]{1,64}}"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl; charset=utf-8"
SEGMENT_CACHE = "public, max-age=86400, immutable"
HLS_PARAMS = ("_HLS_msn", "_HLS_part", "_HLS_skip")
ENTRY_NAMES = frozenset(("master.m3u8", "master-ts.m3u8", "manifest.mpd"))
ENTRY = r"master\.m3u8|master-ts\.m3u8|manifest\.mpd"
RENDITION = r"video|audio|\d{3,4}p|(?:av|ts)(?:-\d{3,4}p)?"
_RENDITION_FILE = re.compile(
    rf"(?P<rendition>{RENDITION})/(?:index\.m3u8"
    r"|init-(?P<epoch>\d{1,6})\.mp4"
    r"|(?P<msn>\d{1,9})(?:\.(?P<part>\d{1,9}))?\.(?P<ext>m4s|ts))")


def _query(request: web.Request) -> str:
    """The entry manifest's query carried onto child URLs, without blocking-reload params
    (remembered per raw query: every viewer sends the same one again each part)."""
    raw = request.rel_url.raw_query_string
    query = _QUERIES.get(raw)
    if query is None:
        if len(_QUERIES) > 10_000:
            _QUERIES.clear()
        query = _QUERIES[raw] = urlencode(sorted(
            (k, v) for k, v in request.rel_url.query.items() if k not in HLS_PARAMS))
    return query


_QUERIES: dict[str, str] = {}


async def _authorized(request: web.Request) -> LiveChannel:
    guard = request.app[GUARD]
    guard.precheck(request)
    live_id = request.match_info["live_id"]
    hub = request.app[LIVE_HUB]
    channel = hub.channels.get(live_id)
    stream = hub.streams.get(live_id)
    if channel is None or stream is None:
        raise ClientError(404, "live_not_started", "this live stream has not started")
    grant = guard.authorize(request, live_id, stream.access, stream.organization_id)
    await request.app[VIEWERS].admit(grant, request.rel_url.query.get("token"))
    request[GRANT] = grant  # for the analytics event of the response
    channel.viewer(request.rel_url.query.get("token") or request.remote or "")
    if not channel.ready:
        raise ClientError(404, "live_not_started", "the stream has no media yet")
    return channel


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.rel_url.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ClientError(400, "invalid_parameter", f"{name} must be a non-negative integer")
    return int(raw)


def _playlist(body: bytes, *, blocking: bool) -> web.Response:
    # A blocking request's URL names the state it waited for, so its answer may be cached
    # (CDN request collapsing); a plain reload must be revalidated.
    cache = "public, max-age=60" if blocking else "no-cache"
    return web.Response(body=body, headers={"Content-Type": PLAYLIST_TYPE,
                                             "Cache-Control": cache})


async def _block(request: web.Request, channel: LiveChannel) -> bool:
    msn = _int_param(request, "_HLS_msn")
    part = _int_param(request, "_HLS_part")
    if part is not None and msn is None:
        raise ClientError(400, "invalid_parameter", "_HLS_part needs _HLS_msn")
    if msn is None:
        return False
    if channel.too_far(msn):
        raise ClientError(400, "too_far_ahead",
                          "_HLS_msn is more than two segments beyond the playlist")
    if not await channel.wait_for(msn, part, channel.settings.blocking_timeout):
        if channel.state != "ended":
            raise ClientError(503, "not_yet_available",
                              "the requested segment or part did not arrive in time")
    return True


async def live_file(request: web.Request) -> web.Response:
    """Every GET under /live/{id}/ that is not WHIP: one route, dispatched here. (A route per
    kind made aiohttp try up to four patterns per request, ~10% of the CPU of a crowd of
    LL-HLS viewers.)"""
    path = request.match_info["path"]
    if path in ENTRY_NAMES:
        request[ROUTE_LABEL] = "/live/{live_id}/{name}"
        return await entry(request, path)
    m = _RENDITION_FILE.fullmatch(path)
    if m is None:
        raise ClientError(404, "not_found", "no such live playback URL")
    if m["msn"] is not None:
        request[ROUTE_LABEL] = "/live/{live_id}/{rendition}/{file}"
        return await media_file(request, m)
    if m["epoch"] is not None:
        request[ROUTE_LABEL] = "/live/{live_id}/{rendition}/init-{epoch}.mp4"
        return await init_file(request, m["rendition"], int(m["epoch"]))
    request[ROUTE_LABEL] = "/live/{live_id}/{rendition}/index.m3u8"
    return await media_playlist(request, m["rendition"])


async def entry(request: web.Request, name: str) -> web.Response:
    channel = await _authorized(request)
    query = _query(request)
    live_id = request.match_info["live_id"]
    if name == "manifest.mpd":
        mpd = web.Response(text=live_mpd(channel.window(), query, time.time()),
                           content_type="application/dash+xml", charset="utf-8",
                           headers={"Cache-Control": "no-cache"})
        return served(request, mpd, live_id, None, name)
    body = channel.rendered(("master", name, query),
                            lambda w: hls.master(w, query, ts=name == "master-ts.m3u8"))
    return served(request, _playlist(body, blocking=False), live_id, None, name)


async def media_playlist(request: web.Request, rendition: str) -> web.Response:
    channel = await _authorized(request)
    if rendition not in channel.renditions:
        raise ClientError(404, "not_found", "no such rendition")
    ts = channel.renditions[rendition].kind == "ts"
    blocking = await _block(request, channel)
    skip = request.rel_url.query.get("_HLS_skip") in ("YES", "v2")
    query = _query(request)
    body = channel.rendered(
        ("media", rendition, query, skip),
        lambda w: hls.media(w, rendition, query, ts=ts, skip=skip))
    return served(request, _playlist(body, blocking=blocking), request.match_info["live_id"],
                  rendition, "index.m3u8")


async def media_file(request: web.Request, m: re.Match[str]) -> web.Response:
    """`{msn}.m4s`, `{msn}.{part}.m4s` or (rendition ts) `{msn}.ts`, as matched by
    _RENDITION_FILE."""
    channel = await _authorized(request)
    rendition, ext = m["rendition"], m["ext"]
    msn, part = int(m["msn"]), None if m["part"] is None else int(m["part"])
    if rendition.startswith("ts") != (ext == "ts") or (ext == "ts" and part is not None):
        raise ClientError(404, "not_found", "no such file")
    if not channel.has(msn, part) and not channel.too_far(msn):
        # Announced by a preload hint (or about to be): hold the request until it exists.
        await channel.wait_for(msn, part, channel.settings.blocking_timeout)
    if ext == "ts":
        data = await channel.ts_segment(rendition, msn)
        content_type = "video/mp2t"
    elif part is None:
        data = await channel.segment(rendition, msn)
        content_type = "video/iso.segment"
    else:
        data = channel.part(rendition, msn, part)
        content_type = "video/iso.segment"
    if data is None:
        raise ClientError(404, "not_found", "no such segment or part")
    return served(request, web.Response(body=data, headers={"Content-Type": content_type,
                                                            "Cache-Control": SEGMENT_CACHE}),
                  request.match_info["live_id"], rendition, m[0].rpartition("/")[2])


async def init_file(request: web.Request, rendition: str, epoch: int) -> web.Response:
    channel = await _authorized(request)
    data = channel.init(rendition, epoch)
    if data is None:
        raise ClientError(404, "not_found", "no such initialization segment")
    return served(request, web.Response(body=data, content_type="video/mp4",
                                        headers={"Cache-Control": SEGMENT_CACHE}),
                  request.match_info["live_id"], rendition, "init.mp4")


def add_live_routes(app: web.Application) -> None:
    """Before the WHIP routes, which share the /live prefix: aiohttp tries routes in order."""
    app.router.add_get(f"/live/{LIVE_ID}/{{path:{ENTRY}|(?:{RENDITION})/[^/]{{1,40}}}}",
                       live_file)
