"""The analytics event: what players (beacons) and the origin (requests served) report.

One JSON object per event, in the field `event` of the Redis stream `mediaorigin:events`
(README: Analytics events). Beacons follow the design's shape (event, timestamp, position,
quality, buffering {count, duration}, network {bandwidth, type}); the origin adds one
`manifest` or `segment` event per response it served. `id` is unique per event and makes
aggregation idempotent: a redelivered event is recognised and not counted again.
"""

from __future__ import annotations

import json
import json.encoder
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

STREAM = "mediaorigin:events"
PLAYER_EVENTS = ("play", "pause", "seek", "quality_change", "buffering_start",
                 "buffering_end", "heartbeat", "ended", "error")
ORIGIN_EVENTS = ("manifest", "segment")
DEVICES = ("desktop", "mobile", "tablet", "tv", "bot", "other")
# Flat objects only: no need to track containers for cycles (a quarter of the cost).
_compact_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def new_event_id() -> str:
    """A fresh `Event.id` (32 hex digits like the default's) for hot paths: a quarter of
    uuid4's cost."""
    return os.urandom(16).hex()


@dataclass
class Event:
    type: str  # one of PLAYER_EVENTS or ORIGIN_EVENTS
    media_id: str  # media id, or a live stream id ("live_…")
    timestamp: float  # unix seconds (beacons: the player's clock, checked for sanity)
    session: str = ""  # playback session (token `sid`, else the beacon's sessionId)
    user: str = ""  # viewer (token `sub`, else the beacon's userId)
    position: float | None = None  # seconds into the media
    quality: str | None = None  # e.g. "720p"
    buffering_count: int | None = None
    buffering_duration: float | None = None  # seconds
    bandwidth: float | None = None  # kbit/s as the player measured it
    network_type: str | None = None  # wifi, cellular, ethernet...
    startup_time: float | None = None  # seconds from load to first frame (on "play")
    error: str | None = None  # error code/message (on "error")
    # Origin events
    rendition: str | None = None
    bytes: int | None = None
    status: int | None = None
    country: str | None = None  # ISO 3166 alpha-2 from the geo database, when configured
    device: str | None = None  # one of DEVICES, from the User-Agent
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        # vars(), not asdict(): the fields are flat, and asdict's deep copy costs 5x more.
        return _compact_json({k: v for k, v in vars(self).items() if v is not None})

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        data: dict[str, Any] = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# An origin event as the response path queues it: Event's fields in this order, and no id yet
# (the sender gives it one). A tuple costs a fraction of an Event on the hot path.
Served = tuple[str, str, float, str, str, "str | None", int, int, "str | None", str]
#              type media_id timestamp session user rendition bytes status country device
_quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a str (C)


def served_json(record: Served, event_id: str) -> str:
    """`Event(...).to_json()` of an origin event, written directly (a third of the cost)."""
    kind, media_id, ts, session, user, rendition, nbytes, status, country, device = record
    return (f'{{"type":{_quote(kind)},"media_id":{_quote(media_id)},"timestamp":{ts!r},'
            f'"session":{_quote(session)},"user":{_quote(user)}'
            + ("" if rendition is None else f',"rendition":{_quote(rendition)}')
            + f',"bytes":{nbytes:d},"status":{status:d}'
            + ("" if country is None else f',"country":{_quote(country)}')
            + f',"device":{_quote(device)},"id":{_quote(event_id)}}}')


def device_class(user_agent: str) -> str:
    """A coarse device class from a User-Agent (no third-party database)."""
    ua = user_agent.lower()
    if not ua:
        return "other"
    if any(b in ua for b in ("bot", "crawler", "spider", "curl", "wget", "python-requests",
                             "go-http-client")):
        return "bot"
    if any(t in ua for t in ("smart-tv", "smarttv", "appletv", "tizen", "webos", "roku",
                             "crkey", "aft")):
        return "tv"
    if "ipad" in ua or ("android" in ua and "mobile" not in ua) or "tablet" in ua:
        return "tablet"
    if any(m in ua for m in ("mobile", "iphone", "ipod", "android")):
        return "mobile"
    if any(d in ua for d in ("windows", "macintosh", "x11", "linux", "cros")):
        return "desktop"
    return "other"
