"""Where playback aggregates live in Redis: one layout for the aggregator and the queries.

Per media item (or live stream) and UTC day, `analytics:{media}:{yyyymmdd}:<part>`:

    c     hash   counters: views, playtime_ms, completions, switches, buffering (stalls),
                 buffering_ms, startup_ms/startup_n, bw_sum/bw_n (kbit/s reports), bytes,
                 segments, manifests, errors, peak (live), late, events
    q     hash   quality -> milliseconds watched
    u     HLL    viewers (u:<user>, else s:<session>)
    err   hash   error code -> count
    geo   hash   country -> sessions
    dev   hash   device class -> sessions
    heat  hash   w:<bucket> -> sessions that watched it, r:<bucket> -> sessions that re-watched

All time, for the media record: `analytics:{media}:total` (hash), `:total:q`, `:total:u`.
Per viewer (all time, for the course module): `analytics:{media}:viewers:watched` (user -> ms),
`:viewers:furthest` (user -> seconds), `:viewers:completed` (user -> 1).
Live streams: `analytics:{media}:live`, a sorted set session -> last seen (unix seconds).
These keys expire DAY_TTL after their last write.

Working state, short-lived: `analytics:seen:{event id}` (exactly-once guard, SEEN_TTL) and
`analytics:session:{media}:{session}` (a hash: last ts/pos/type/quality, buffering start
and rebuffering totals, flags), with `:sec` (2-bit watch count per second of the media) and
`:bkt` (2-bit state per heatmap bucket) bitfields, all SESSION_TTL after the session's last
event.

Guards cost about 125 bytes of Redis memory per event for SEEN_TTL (a day: about 3.8 GB at a
sustained 350 events/s): a guard only matters while its entry can still be redelivered
(pending, and not yet trimmed from the stream by MAXLEN), so a deployment with heavy traffic
can pass a shorter `seen_ttl` to the Aggregator.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime

PREFIX = "analytics"
MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what may appear in key names
DAY_TTL = 400 * 86400
SESSION_TTL = 24 * 3600
SEEN_TTL = 86400  # pending entries older than a day are a dead deployment, not a crash
BUCKET = 10  # seconds of media per heatmap bucket
LIVE_PREFIX = "live_"
LIVE_WINDOW = 30.0  # a live session seen this recently counts as watching
MAX_HEAT_SECONDS = 24 * 3600  # heatmap positions beyond this (or the duration) are ignored
DAY_PARTS = ("c", "q", "u", "err", "geo", "dev", "heat")


def is_live(media_id: str) -> bool:
    return media_id.startswith(LIVE_PREFIX)


def day_of(ts: float) -> str:
    """The UTC day of a unix time, as used in keys: yyyymmdd."""
    return time.strftime("%Y%m%d", time.gmtime(ts))


def day_str(d: date) -> str:
    return d.strftime("%Y%m%d")


def today(now: float | None = None) -> date:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).date()


def media_key(media_id: str) -> str:
    return f"{PREFIX}:{media_id}"


def day_key(media_id: str, day: str, part: str) -> str:
    return f"{PREFIX}:{media_id}:{day}:{part}"


def total_key(media_id: str, part: str = "") -> str:
    return f"{PREFIX}:{media_id}:total" + (f":{part}" if part else "")


def viewers_key(media_id: str, part: str) -> str:
    return f"{PREFIX}:{media_id}:viewers:{part}"


def live_key(media_id: str) -> str:
    return f"{PREFIX}:{media_id}:live"


def session_key(media_id: str, session: str) -> str:
    return f"{PREFIX}:session:{media_id}:{session}"


def seen_key(event_id: str) -> str:
    return f"{PREFIX}:seen:{event_id}"
