"""One analytics event per manifest or segment served (`[analytics] server_events`).

Handlers end with `return served(request, response, media_id, rendition, name)`. On the
response path this only gathers what the request already knows (the guard's grant: session,
user, country; the User-Agent's device class, cached per string) into a `Served` tuple, the
Event's fields in order, and appends it to the emitter's buffer: no JSON, no I/O, not even an
Event object (the sender writes the same JSON an Event would, with its id; this is most of an
event's cost on a busy origin, see bench/analytics_bench.py).
"""

from __future__ import annotations

import functools
import time

from aiohttp import web

from ..analytics.emitter import Emitter
from ..analytics.events import device_class
from ..auth.playback_guard import Grant
from ..auth.viewers import ViewerSlots

# The emitter, set only when server-side events are on.
SERVER_EVENTS = web.AppKey("analytics_server_events", Emitter)
# Who plays, as the guard granted it (set by the routes' authorization).
GRANT = web.RequestKey("playback_grant", Grant)
MANIFESTS = (".m3u8", ".mpd")

device_of = functools.lru_cache(maxsize=1024)(device_class)


def viewer(grant: Grant | None, token: str | None) -> tuple[str, str]:
    """(session, user) of a grant: the token's claims (a token without a session claim is
    its own session, as for stream slots), else empty."""
    if grant is None or grant.via != "token":
        return "", ""
    return ViewerSlots.session_of(grant, token), grant.user or ""


def served(request: web.Request, response: web.StreamResponse, media_id: str,
           rendition: str | None, name: str) -> web.StreamResponse:
    """Record `response` (about to be sent) as a manifest or segment event; returns it."""
    emitter = request.app.get(SERVER_EVENTS)
    if emitter is None:
        return response
    grant = request.get(GRANT)
    if grant is not None and grant.via == "token":
        session, user = viewer(grant, request.rel_url.query.get("token"))
    else:
        session = user = ""
    emitter.emit((
        "manifest" if name.endswith(MANIFESTS) else "segment", media_id, time.time(),
        session, user, rendition,
        0 if request.method == "HEAD" else (response.content_length or 0),  # bytes sent
        response.status, grant.country if grant is not None else None,
        device_of(request.headers.get("User-Agent", ""))))
    return response
