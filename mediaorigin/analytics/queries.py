"""Reading the aggregates back: one pipelined round trip per question.

`AnalyticsReader.media()` answers the design's Streaming Analytics shape for a period of
UTC days; `record_block()` fills the Media record's `analytics` from the all-time totals.
Aggregates are per UTC day, so periods are whole days: `today`, `last24h` (yesterday and
today), `last7d`, `last30d` (that many days ending today) or `YYYY-MM-DD..YYYY-MM-DD`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import redis.asyncio as aioredis

from . import keys

log = logging.getLogger("mediaorigin.analytics")

GROUPS = ("playback", "quality", "performance", "audience", "bandwidth", "engagement",
          "viewers", "daily")
ALIASES = {"views": "playback", "heatmap": "engagement", "buffering": "performance",
           "errors": "performance", "geography": "audience", "devices": "audience",
           "concurrent": "audience"}
NAMED_PERIODS = {"today": 1, "last24h": 2, "last7d": 7, "last30d": 30}
MAX_DAYS = keys.DAY_TTL // 86400
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_HEIGHT = re.compile(r"^(\d{3,4})p")
_BREAKER = 10.0  # after a failed record lookup, leave Redis alone this long


@dataclass(frozen=True)
class Period:
    name: str
    first: date
    last: date

    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "from": self.first.isoformat(), "to": self.last.isoformat(),
                "days": (self.last - self.first).days + 1}


def parse_period(text: str, today: date) -> Period:
    """A period name or an inclusive `YYYY-MM-DD..YYYY-MM-DD` range; ValueError otherwise."""
    if text in NAMED_PERIODS:
        return Period(text, today - timedelta(days=NAMED_PERIODS[text] - 1), today)
    found = _RANGE.match(text)
    if not found:
        raise ValueError("period must be today, last24h, last7d, last30d or "
                         "YYYY-MM-DD..YYYY-MM-DD")
    first, last = (date.fromisoformat(found.group(n)) for n in (1, 2))
    if last < first:
        raise ValueError("the period ends before it starts")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValueError(f"a period covers at most {MAX_DAYS} days")
    return Period(text, first, last)


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """Metric groups from `metrics=views,quality,...` (every group when absent)."""
    if text is None or not text.strip():
        return GROUPS
    chosen = []
    for name in (n.strip() for n in text.split(",")):
        group = ALIASES.get(name, name)
        if group not in GROUPS:
            raise ValueError(f"unknown metric {name!r}: expected one of "
                             f"{', '.join(sorted((*GROUPS, *ALIASES)))}")
        if group not in chosen:
            chosen.append(group)
    return tuple(g for g in GROUPS if g in chosen)


@dataclass
class Day:
    """One UTC day's aggregates, as stored."""

    date: date
    counters: dict[str, float]
    quality: dict[str, int]  # milliseconds
    errors: dict[str, int]
    geo: dict[str, int]
    devices: dict[str, int]
    heat: dict[str, int]
    unique: int

    @property
    def views(self) -> int:
        return int(self.counters.get("views", 0))

    @property
    def playtime(self) -> float:
        return self.counters.get("playtime_ms", 0) / 1000

    def row(self) -> dict[str, Any]:
        """The day as a flat row (CSV reports)."""
        c = self.counters
        buffering = c.get("buffering_ms", 0) / 1000
        return {
            "date": self.date.isoformat(), "views": self.views, "uniqueViewers": self.unique,
            "playtime": round(self.playtime, 3),
            "averageViewDuration": _ratio(self.playtime, self.views, 3),
            "completions": int(c.get("completions", 0)),
            "completion": min(_ratio(c.get("completions", 0), self.views, 4), 1.0),
            "buffering": int(c.get("buffering", 0)), "bufferingTime": round(buffering, 3),
            "rebufferingRatio": _ratio(buffering, self.playtime + buffering, 4),
            "startup": _ratio(c.get("startup_ms", 0) / 1000, c.get("startup_n", 0), 3),
            "errors": int(c.get("errors", 0)),
            "bandwidth": _ratio(c.get("bw_sum", 0), c.get("bw_n", 0), 1),
            "bytesServed": int(c.get("bytes", 0)),
            "peakConcurrent": int(c.get("peak", 0)),
        }


class AnalyticsReader:
    def __init__(self, redis_url: str, timeout: float = 2.0) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, protocol=2, socket_connect_timeout=timeout,
            socket_timeout=timeout)
        self._broken_until = 0.0

    async def close(self) -> None:
        await self._redis.aclose()

    async def days(self, media_id: str, period: Period, *, heat: bool = True,
                   viewers: bool = False) -> tuple[list[Day], int, dict[str, Any], int]:
        """(per-day aggregates, unique viewers over the period, per-viewer progress,
        live sessions seen within the last LIVE_WINDOW) in one round trip."""
        days = period.days()
        async with self._redis.pipeline(transaction=False) as pipe:
            for d in days:
                day = keys.day_str(d)
                for part in ("c", "q", "err", "geo", "dev"):
                    pipe.hgetall(keys.day_key(media_id, day, part))
                if heat:
                    pipe.hgetall(keys.day_key(media_id, day, "heat"))
                pipe.pfcount(keys.day_key(media_id, day, "u"))
            pipe.pfcount(*[keys.day_key(media_id, keys.day_str(d), "u") for d in days])
            if viewers:
                for part in ("watched", "furthest", "completed"):
                    pipe.hgetall(keys.viewers_key(media_id, part))
            pipe.zcount(keys.live_key(media_id), f"({time.time() - keys.LIVE_WINDOW}", "+inf")
            replies = list(await pipe.execute())
        out = []
        for d in days:
            c, q, err, geo, dev = (replies.pop(0) for _ in range(5))
            h = replies.pop(0) if heat else {}
            unique = replies.pop(0)
            out.append(Day(d, {k: float(v) for k, v in c.items()}, _ints(q), _ints(err),
                           _ints(geo), _ints(dev), _ints(h), int(unique)))
        unique_total = int(replies.pop(0))
        progress: dict[str, Any] = {}
        if viewers:
            watched, furthest, completed = (replies.pop(0) for _ in range(3))
            progress = {"watched": watched, "furthest": furthest, "completed": completed}
        concurrent = int(replies.pop(0))
        return out, unique_total, progress, concurrent

    async def media(self, media_id: str, period: Period, *, duration: float | None = None,
                    groups: tuple[str, ...] = GROUPS) -> dict[str, Any]:
        """The design's Streaming Analytics for one media item or live stream."""
        return (await self.collect(media_id, period, duration=duration, groups=groups))[0]

    async def collect(self, media_id: str, period: Period, *, duration: float | None = None,
                      groups: tuple[str, ...] = GROUPS) -> tuple[dict[str, Any], list[Day]]:
        """`media()` and the days it was summed from (for per-day report tables)."""
        days, unique, progress, concurrent = await self.days(
            media_id, period, heat="engagement" in groups, viewers="viewers" in groups)
        return summarize(media_id, period, days, unique, progress, concurrent,
                         duration=duration, live=keys.is_live(media_id), groups=groups), days

    async def record_block(self, media_id: str) -> dict[str, Any] | None:
        """The Media record's `analytics` (the design's fields; bandwidth: the average kbit/s
        players reported) from the all-time totals; None when there are none or Redis does
        not answer (then the stored block stands)."""
        if time.monotonic() < self._broken_until:
            return None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.total_key(media_id))
                pipe.hgetall(keys.total_key(media_id, "q"))
                pipe.pfcount(keys.total_key(media_id, "u"))
                total, quality, unique = await pipe.execute()
        except Exception as e:  # an analytics outage must not fail the record
            self._broken_until = time.monotonic() + _BREAKER
            log.warning("analytics: totals of %s unavailable: %s", media_id, e)
            return None
        if not total:
            return None
        views = int(total.get("views", 0))
        playtime = int(total.get("playtime_ms", 0)) / 1000
        return {"views": views, "uniqueViewers": int(unique),
                "totalPlaytime": round(playtime, 3),
                "averageViewDuration": _ratio(playtime, views, 3),
                "qualityDistribution": _seconds(_ints(quality)),
                "bandwidth": _ratio(float(total.get("bw_sum", 0)), int(total.get("bw_n", 0)),
                                    1)}


def summarize(media_id: str, period: Period, days: list[Day], unique: int,
              progress: dict[str, Any], concurrent: int, *, duration: float | None,
              live: bool, groups: tuple[str, ...]) -> dict[str, Any]:
    """Sum the days into the design's shape, keeping only `groups`."""
    c: dict[str, float] = {}
    quality: dict[str, int] = {}
    errors: dict[str, int] = {}
    geo: dict[str, int] = {}
    devices: dict[str, int] = {}
    heat: dict[str, int] = {}
    for day in days:
        for target, source in ((c, day.counters), (quality, day.quality), (errors, day.errors),
                               (geo, day.geo), (devices, day.devices), (heat, day.heat)):
            for k, v in source.items():
                target[k] = target.get(k, 0) + v
    views = int(c.get("views", 0))
    playtime = c.get("playtime_ms", 0) / 1000
    buffering = c.get("buffering_ms", 0) / 1000
    body: dict[str, Any] = {"mediaId": media_id, "live": live, "period": period.to_json()}
    if "playback" in groups:
        body["playback"] = {
            "views": views, "uniqueViewers": unique, "duration": round(playtime, 3),
            "averageViewDuration": _ratio(playtime, views, 3),
            "completion": None if live else min(_ratio(c.get("completions", 0), views, 4), 1.0),
            "completions": int(c.get("completions", 0)),
        }
    if "quality" in groups:
        body["quality"] = {"distribution": _seconds(quality),
                           "switches": int(c.get("switches", 0)),
                           "average": average_quality(quality)}
    if "performance" in groups:
        body["performance"] = {
            "buffering": int(c.get("buffering", 0)), "bufferingTime": round(buffering, 3),
            "rebufferingRatio": _ratio(buffering, playtime + buffering, 4),
            "startup": _ratio(c.get("startup_ms", 0) / 1000, c.get("startup_n", 0), 3),
            "errors": int(c.get("errors", 0)), "errorTypes": _sorted(errors),
        }
    if "audience" in groups:
        body["audience"] = {
            "concurrent": concurrent if live else None,
            "peakConcurrent": max((int(d.counters.get("peak", 0)) for d in days), default=0)
            if live else None,
            "geographic": _sorted(geo), "devices": _sorted(devices),
        }
    if "bandwidth" in groups:
        body["bandwidth"] = {"average": _ratio(c.get("bw_sum", 0), c.get("bw_n", 0), 1),
                             "bytesServed": int(c.get("bytes", 0))}
    if "engagement" in groups:
        body["engagement"] = {"bucketSize": keys.BUCKET,
                              "heatmap": [] if live else heatmap(heat, duration)}
    if "viewers" in groups:
        body["viewers"] = viewers(progress, duration, live)
    if "daily" in groups:
        body["daily"] = [{"date": d.date.isoformat(), "views": d.views,
                          "uniqueViewers": d.unique, "playtime": round(d.playtime, 3)}
                         for d in days]
    return body


def heatmap(heat: dict[str, int], duration: float | None) -> list[dict[str, Any]]:
    """Every bucket of the media, in order: sessions that watched it and that re-watched it."""
    seen = [int(k[2:]) for k in heat if k[:2] in ("w:", "r:") and k[2:].isdigit()]
    count = math.ceil(duration / keys.BUCKET) if duration and duration > 0 else 0
    count = max(count, max(seen, default=-1) + 1)
    return [{"start": b * keys.BUCKET, "end": b * keys.BUCKET + keys.BUCKET,
             "watched": heat.get(f"w:{b}", 0), "rewatched": heat.get(f"r:{b}", 0)}
            for b in range(count)]


def viewers(progress: dict[str, Any], duration: float | None,
            live: bool) -> list[dict[str, Any]]:
    watched = progress.get("watched", {})
    furthest = progress.get("furthest", {})
    completed = progress.get("completed", {})
    out = []
    for user in sorted(set(watched) | set(furthest) | set(completed)):
        far = float(furthest.get(user, 0))
        done = user in completed
        if live:
            completion = None
        elif done:
            completion = 1.0
        else:
            completion = round(min(far / duration, 1.0), 4) if duration else None
        out.append({"user": user, "watched": round(int(watched.get(user, 0)) / 1000, 3),
                    "furthest": round(far, 3), "completion": completion, "completed": done})
    return out


def average_quality(distribution_ms: dict[str, int]) -> str | None:
    """The rendition closest to the time-weighted mean height (e.g. "720p"); with labels
    that name no height, the most watched one."""
    if not distribution_ms:
        return None
    heights = {q: int(m.group(1)) for q in distribution_ms if (m := _HEIGHT.match(q))}
    weight = sum(distribution_ms[q] for q in heights)
    if not heights or weight <= 0:
        return max(distribution_ms, key=lambda q: distribution_ms[q])
    mean = sum(h * distribution_ms[q] for q, h in heights.items()) / weight
    return min(heights, key=lambda q: (abs(heights[q] - mean), -heights[q]))


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ints(values: dict[str, str]) -> dict[str, int]:
    return {k: int(float(v)) for k, v in values.items()}


def _seconds(ms: dict[str, int]) -> dict[str, float]:
    return {k: round(v / 1000, 3) for k, v in sorted(ms.items(), key=lambda kv: -kv[1])}


def _sorted(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _ratio(a: float, b: float, digits: int) -> float:
    return round(a / b, digits) if b else 0.0
