"""`/api/live`: create, list, inspect and end live streams.

POST answers the publishing credentials once (RTMP stream key, WHIP bearer token); only their
SHA-256 is stored. GET reports the stream's state and, while it is live, what arrives (bitrate,
frame rate, codecs, keyframe interval) and how many watch. DELETE ends the stream: the channel
closes, the recording is made, and the keys stop working.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from ..live.repository import LiveRepository, LiveStream
from ..origin.live_routes import LIVE_HUB
from ..processing.ladder import DEFAULT_RUNGS
from .context import principal
from .errors import ApiError
from .media import PUBLIC_URL, _require
from .playback import _issue, _ttl
from .validation import ORGANIZATION, _text, bad, load_json_object, media_fields

LIVE_REPO = web.AppKey("live_repository", LiveRepository)
RTMP_URL = web.AppKey("rtmp_public_url", str)  # "" : rtmp://<API host>:<port>/live
RTMP_PORT = web.AppKey("rtmp_port", int)
DEFAULT_RECORD = web.AppKey("live_record_default", bool)
DEFAULT_DVR = web.AppKey("live_dvr_default", float)
MAX_DVR = 24 * 3600.0


def _urls(request: web.Request, stream: LiveStream) -> dict[str, Any]:
    base = request.config_dict[PUBLIC_URL] or ""
    rtmp = request.config_dict[RTMP_URL] or \
        f"rtmp://{request.url.host or '127.0.0.1'}:{request.config_dict[RTMP_PORT]}/live"
    return {
        "rtmp": {"url": rtmp},
        "whip": {"url": f"{base}/live/{stream.id}/whip"},
        "goLive": f"{base}/live/{stream.id}/golive",
        "playback": {"hls": f"{base}/live/{stream.id}/master.m3u8",
                     "hlsTs": f"{base}/live/{stream.id}/master-ts.m3u8",
                     "dash": f"{base}/live/{stream.id}/manifest.mpd"},
    }


def _json(request: web.Request, stream: LiveStream) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": stream.id, "title": stream.title, "organizationId": stream.organization_id,
        "state": stream.state, "record": stream.record, "dvrWindow": stream.dvr_window,
        "latencyMode": stream.latency_mode, "ladder": stream.ladder,
        "createdAt": stream.created_at,
        "startedAt": stream.started_at, "endedAt": stream.ended_at,
        "recording": {"mediaId": stream.recording_media_id} if stream.recording_media_id
        else None,
        **_urls(request, stream),
    }
    hub = request.config_dict[LIVE_HUB]
    channel = hub.channels.get(stream.id)
    if channel is not None:
        protocol = hub.publisher_protocol(stream.id)
        body["ingest"] = {"protocol": protocol, "connected": protocol is not None,
                          **channel.stats.report()}
        body["viewers"] = channel.viewers()
        if channel.state == "reconnecting":
            body["state"] = "reconnecting"
    else:
        body["viewers"] = 0
    return body


async def _visible(request: web.Request, action: str = "read") -> LiveStream:
    live_id = request.match_info["live_id"]
    stream = await request.config_dict[LIVE_REPO].get(live_id)
    if stream is None or not principal(request).sees(stream.organization_id):
        raise ApiError(404, "live_not_found", f"no live stream {live_id!r}")
    _require(request, action)
    return stream


async def create_live(request: web.Request) -> web.Response:
    _require(request, "write")
    who = principal(request)
    obj = load_json_object(await request.read(), "body")
    unknown = set(obj) - {"title", "record", "dvrWindow", "latencyMode", "organization",
                          "access", "ladder"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field")
    title = _text(obj, "title", 500, required=True)
    record = obj.get("record", request.config_dict[DEFAULT_RECORD])
    if not isinstance(record, bool):
        raise bad("record", "true or false")
    dvr = obj.get("dvrWindow", request.config_dict[DEFAULT_DVR])
    if isinstance(dvr, bool) or not isinstance(dvr, int | float) or not 0 <= dvr <= MAX_DVR:
        raise bad("dvrWindow", f"seconds between 0 and {MAX_DVR:.0f}")
    mode = obj.get("latencyMode", "low")
    if mode not in ("low", "normal"):
        raise bad("latencyMode", "'low' (LL-HLS parts) or 'normal'")
    organization = who.organization_id
    if "organization" in obj:
        if who.organization_id is not None and obj["organization"] != who.organization_id:
            raise ApiError(403, "forbidden", "this key creates streams in its own organization")
        organization = obj["organization"]
    if organization is not None and (not isinstance(organization, str)
                                     or not ORGANIZATION.match(organization)):
        raise bad("organization", "letters, digits, '_', '.' or '-', at most 64")
    access = media_fields({"access": obj.get("access")}, creating=False).get("access")
    ladder = obj.get("ladder", [])
    if not isinstance(ladder, list) or len(ladder) > 4 or \
            not all(isinstance(r, str) and r in DEFAULT_RUNGS for r in ladder) or \
            len(set(ladder)) != len(ladder):
        raise bad("ladder", f"up to 4 distinct rungs of {', '.join(DEFAULT_RUNGS)}")
    stream_key, whip_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    stream = await request.config_dict[LIVE_REPO].create(
        title=title or "", organization_id=organization, created_by=who.key_id,
        record=record, dvr_window=float(dvr), latency_mode=mode, stream_key=stream_key,
        whip_token=whip_token, access=access, ladder=ladder)
    body = _json(request, stream)
    body["rtmp"]["streamKey"] = stream_key
    body["whip"]["token"] = whip_token
    return web.json_response(body, status=201, headers={
        "Location": f"/api/live/{stream.id}", "Cache-Control": "no-store"})


async def list_live(request: web.Request) -> web.Response:
    _require(request, "read")
    who = principal(request)
    state = request.rel_url.query.get("state")
    if state is not None and state not in ("idle", "live", "ended"):
        raise bad("state", "idle, live or ended")
    streams = await request.config_dict[LIVE_REPO].list(
        who.organization_id, all_organizations=who.organization_id is None, state=state)
    return web.json_response({"items": [_json(request, s) for s in streams]})


async def get_live(request: web.Request) -> web.Response:
    return web.json_response(_json(request, await _visible(request)))


async def delete_live(request: web.Request) -> web.Response:
    stream = await _visible(request, "delete")
    await request.config_dict[LIVE_HUB].end(stream.id)
    ended = await request.config_dict[LIVE_REPO].get(stream.id)
    assert ended is not None
    return web.json_response(_json(request, ended))


async def live_token(request: web.Request) -> web.Response:
    stream = await _visible(request)
    token, expires = _issue(request, stream.id, _ttl(request))
    urls = _urls(request, stream)["playback"]
    return web.json_response({
        "token": token, "expiresAt": expires,
        "urls": {k: f"{v}?token={token}" for k, v in urls.items()},
    }, headers={"Cache-Control": "no-store"})


def add_routes(api: web.Application) -> None:
    one = r"/live/{live_id:live_[A-Za-z0-9_-]{1,64}}"
    api.router.add_post("/live", create_live)
    api.router.add_get("/live", list_live)
    api.router.add_get(one, get_live)
    api.router.add_delete(one, delete_live)
    api.router.add_get(one + "/token", live_token)
