"""`POST /api/media/{id}/analytics`: player beacons into the analytics stream.

Players hold a playback token, not an API key, so this route is authorized like playback (the
API key middleware lets it through by name): the token (`?token=` or `Authorization: Bearer`)
must open this media item or live stream, or, with open playback, the item's rules must allow
the client. The viewer is the token's (session and user claims; the beacon's own `sessionId`
and `userId` are then ignored); with open playback it is the beacon's (`sessionId` required).

The body is one beacon in the design's shape, or `{"events": [...]}` with up to
`[analytics] max_beacon_events` of them; any content type (navigator.sendBeacon sends
text/plain). Validation is strict and all-or-nothing: a bad field answers 422 naming it
(`events[3].buffering.count`), and nothing of that body is recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ..analytics.emitter import EMITTER, NullEmitter
from ..analytics.events import PLAYER_EVENTS, Event, new_event_id
from ..auth.playback_guard import AccessDenied
from ..origin.http import read_body
from ..origin.live_routes import LIVE_HUB
from ..origin.routes import GUARD, PLAYBACK
from ..origin.served import device_of, viewer
from .errors import ApiError
from .live import LIVE_REPO

ROUTE_NAME = "analytics_beacons"  # in auth.SIGNED_ROUTES: no API key
MAX_BEACON_EVENTS = web.AppKey("max_beacon_events", int)
BYTES_PER_EVENT = 2048  # body limit: max_beacon_events of these
CLOCK_SKEW = 86400.0  # a beacon's timestamp may be this far from ours, seconds
TOP = frozenset(("event", "timestamp", "position", "quality", "buffering", "network",
                 "sessionId", "userId", "startupTime", "error"))
BUFFERING = frozenset(("count", "duration"))
NETWORK = frozenset(("bandwidth", "type"))


def _invalid(path: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, f"{path}: {message}")


def _known(obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    extra = obj.keys() - allowed
    if extra:
        raise _invalid(path + sorted(extra)[0], "unknown field", "unknown_field")


def _number(obj: dict[str, Any], key: str, path: str, high: float,
            integer: bool = False) -> Any:
    """A finite number in [0, high] (an integer when asked), or None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _invalid(path + key, "an integer" if integer else "a number")
    if not 0 <= value <= high:  # NaN and infinities fail this too
        raise _invalid(path + key, f"between 0 and {high:g}")
    return value


def _text(obj: dict[str, Any], key: str, path: str, longest: int) -> str | None:
    """A printable string of 1 to `longest` characters, or None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= longest or not value.isprintable():
        raise _invalid(path + key, f"a printable string of 1 to {longest} characters")
    return value


def _object(obj: dict[str, Any], key: str, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(path + key, "an object")
    _known(value, allowed, f"{path}{key}.")
    return value


def parse_beacon(raw: Any, path: str, now: float, need_session: bool) -> dict[str, Any]:
    """One beacon checked, as Event keyword arguments (plus sessionId/userId)."""
    if not isinstance(raw, dict):
        raise _invalid(path.rstrip(".") or "body", "a beacon object")
    _known(raw, TOP, path)
    event = raw.get("event")
    if event is None:
        raise _invalid(path + "event", "missing", "missing_field")
    if event not in PLAYER_EVENTS:
        raise _invalid(path + "event", f"one of {', '.join(PLAYER_EVENTS)}")
    ts = _number(raw, "timestamp", path, 1e15)  # milliseconds: finite, and a float's range
    if ts is None:
        timestamp = now
    else:
        timestamp = ts / 1000.0
        if abs(timestamp - now) > CLOCK_SKEW:
            raise _invalid(path + "timestamp", "milliseconds since 1970, within a day of now")
    session = _text(raw, "sessionId", path, 128)
    if session is None and need_session:
        raise _invalid(path + "sessionId", "missing (open playback: the player names its "
                       "session)", "missing_field")
    buffering = _object(raw, "buffering", path, BUFFERING)
    network = _object(raw, "network", path, NETWORK)
    return {
        "type": event, "timestamp": timestamp,
        "position": _number(raw, "position", path, 1e7),
        "quality": _text(raw, "quality", path, 32),
        "buffering_count": _number(buffering, "count", path + "buffering.", 1e6, True),
        "buffering_duration": _number(buffering, "duration", path + "buffering.", 86400),
        "bandwidth": _number(network, "bandwidth", path + "network.", 1e8),
        "network_type": _text(network, "type", path + "network.", 32),
        "startup_time": _number(raw, "startupTime", path, 3600),
        "error": _text(raw, "error", path, 1000),
        "sessionId": session,
        "userId": _text(raw, "userId", path, 128),
    }


def _no_constants(name: str) -> Any:
    raise ApiError(422, "invalid_field", f"{name} is not a number")


def parse_body(body: bytes, limit: int, now: float, need_session: bool) -> list[dict[str, Any]]:
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    if isinstance(data, dict) and "events" in data:
        _known(data, frozenset(("events",)), "")
        items = data["events"]
        if not isinstance(items, list) or not items:
            raise _invalid("events", "a non-empty list of beacons")
        if len(items) > limit:
            raise ApiError(413, "too_many_events", f"at most {limit} events per request")
        return [parse_beacon(item, f"events[{i}].", now, need_session)
                for i, item in enumerate(items)]
    return [parse_beacon(data, "", now, need_session)]


def _token(request: web.Request) -> str | None:
    token = request.rel_url.query.get("token")
    if token is None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
    return token


async def _rules_of(request: web.Request, media_id: str) -> tuple[Any, str | None]:
    """(access rules, organization) of a playable media item or a live stream; 404 else."""
    if media_id.startswith("live_"):
        stream = request.config_dict[LIVE_HUB].streams.get(media_id) or \
            await request.config_dict[LIVE_REPO].get(media_id)
        if stream is None:
            raise ApiError(404, "live_not_found", f"no live stream {media_id!r}")
        return stream.access, stream.organization_id
    prep = await request.config_dict[PLAYBACK].prepare(media_id, None)  # 404 when unknown
    return prep.item.access, prep.item.organization_id


async def post_beacons(request: web.Request) -> web.Response:
    media_id = request.match_info["media_id"]
    guard = request.config_dict[GUARD]
    token = _token(request)
    if token is None and guard.mode == "token":
        raise AccessDenied("token_missing", "this media needs a playback token")
    access, organization = await _rules_of(request, media_id)
    grant = guard.authorize(request, media_id, access, organization, token=token)
    if token is not None and grant.via != "token":  # open playback forgives, beacons do not
        raise AccessDenied("invalid_token", "the playback token does not open this media")
    limit = request.config_dict[MAX_BEACON_EVENTS]
    body = await read_body(request, limit * BYTES_PER_EVENT)
    if body is None:
        raise ApiError(413, "too_large", f"at most {limit * BYTES_PER_EVENT} bytes")
    beacons = parse_body(body, limit, time.time(), need_session=grant.via != "token")
    session, user = viewer(grant, token)
    emitter = request.config_dict[EMITTER]
    if isinstance(emitter, NullEmitter):
        return web.json_response({"accepted": 0}, status=202)
    device = device_of(request.headers.get("User-Agent", ""))
    for b in beacons:
        sid, uid = b.pop("sessionId"), b.pop("userId")
        if grant.via != "token":  # open playback: the player's word
            session, user = sid, uid or ""
        emitter.emit(Event(media_id=media_id, session=session, user=user, country=grant.country,
                           device=device, id=new_event_id(), **b))
    return web.json_response({"accepted": len(beacons)}, status=202)


def add_routes(api: web.Application) -> None:
    api.router.add_post("/media/{media_id:[A-Za-z0-9_-]{1,80}}/analytics", post_beacons,
                        name=ROUTE_NAME)
