"""Playback analytics, aggregation half: synthetic sessions with known answers.

Events are written into the stream with redis-py (XADD mediaorigin:events * event <json>),
the way the emitter does, then aggregated by `Aggregator` against a real redis-server and
read back through `AnalyticsReader` (the code the API answers with) and the API itself.
Every expected number below is worked out by hand from the sessions' timelines.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pypdfium2
import pytest
import redis.asyncio as aioredis
from library_fixtures import ADMIN_KEY, INSTRUCTOR_KEY, OTHER_ORG_KEY, STUDENT_KEY, auth
from library_fixtures import library_config as make_library_config
from origin_server import OriginThread
from redis_server import RedisServer

from mediaorigin.analytics import keys
from mediaorigin.analytics.aggregator import Aggregator
from mediaorigin.analytics.events import STREAM, Event
from mediaorigin.analytics.queries import AnalyticsReader, parse_period

T0 = 1709632800.0  # 2024-03-05 10:00:00 UTC
DAY1 = "2024-03-05"
DAY2 = "2024-03-06"
MEDIA = "lecture-60s"  # 60 s long
DURATION = 60.0


def ev(kind: str, t: float, session: str, user: str = "", media: str = MEDIA,
       base: float = T0, **fields: Any) -> Event:
    return Event(type=kind, media_id=media, timestamp=base + t, session=session, user=user,
                 **fields)


def session(sid: str, user: str, country: str, device: str,
            steps: list[tuple[Any, ...]], **common: Any) -> list[Event]:
    """Beacons of one session: (type, t, position, extra fields...)."""
    out = []
    for kind, t, position, *extra in steps:
        fields = dict(extra[0]) if extra else {}
        out.append(ev(kind, t, sid, user, position=position, country=country, device=device,
                      **common, **fields))
    return out


def day1_sessions() -> list[Event]:
    """Four sessions of three users on a 60 s lecture, heartbeats every 10 s.

    A alice: plays it through (ended) at 720p.                       60 s watched
    B bob: 480p, switches to 720p at 12 s, stalls 3 s at 25 s, seeks back from 30 s to 5 s,
       watches 5..20 again and pauses.            480p 12 s + 720p 33 s = 45 s watched
    C carol: 1080p, seeks forward from 10 s to 40 s two seconds later (2 s count), reaches
       57 s = 95 % (complete), then a decode error.                      29 s watched
    D alice again: a 30 s silence between heartbeats (beacons lost: not counted), then a
       network error.                                                    20 s watched
    """
    a = session("A", "alice", "DE", "desktop", [
        ("play", 0, 0, {"quality": "720p", "startup_time": 1.0, "bandwidth": 5000.0}),
        ("heartbeat", 10, 10, {"quality": "720p", "bandwidth": 5000.0}),
        ("heartbeat", 20, 20, {"quality": "720p"}),
        ("heartbeat", 30, 30, {"quality": "720p"}),
        ("heartbeat", 40, 40, {"quality": "720p"}),
        ("heartbeat", 50, 50, {"quality": "720p"}),
        ("ended", 60, 60, {"quality": "720p"}),
    ])
    b = session("B", "bob", "FR", "mobile", [
        ("play", 100, 0, {"quality": "480p", "startup_time": 2.0, "bandwidth": 2000.0}),
        ("heartbeat", 110, 10, {"quality": "480p"}),
        ("quality_change", 112, 12, {"quality": "720p"}),
        ("heartbeat", 120, 20, {"quality": "720p"}),
        ("buffering_start", 125, 25),
        ("buffering_end", 128, 25),
        ("heartbeat", 133, 30),
        ("seek", 135, 5),
        ("heartbeat", 145, 15),
        ("pause", 150, 20),
    ])
    c = session("C", "carol", "DE", "mobile", [
        ("play", 200, 0, {"quality": "1080p", "startup_time": 0.5, "bandwidth": 8000.0}),
        ("heartbeat", 210, 10),
        ("seek", 212, 40),
        ("heartbeat", 222, 50),
        ("heartbeat", 229, 57),
        ("error", 230, 57, {"error": "MEDIA_ERR_DECODE"}),
    ])
    d = session("D", "alice", "DE", "desktop", [
        ("play", 300, 0, {"quality": "720p", "startup_time": 1.5}),
        ("heartbeat", 310, 10),
        ("heartbeat", 340, 40),
        ("heartbeat", 350, 50),
        ("error", 355, 50, {"error": "NETWORK"}),
    ])
    # What the origin served session A (bytes count, the session's country is counted once).
    served = [ev("segment", t, "A", "alice", bytes=n, rendition="720p", country="DE",
                 device="desktop") for t, n in ((1, 1000), (5, 2000), (9, 3000))]
    return a + served[:1] + b + served[1:] + c + d


def day2_sessions() -> list[Event]:
    """Next day: dave watches 20 s."""
    return session("F", "dave", "US", "tv", [
        ("play", 86400, 0, {"quality": "720p", "startup_time": 1.0}),
        ("heartbeat", 86410, 10),
        ("heartbeat", 86420, 20),
    ])


async def durations(media_id: str) -> float | None:
    return {MEDIA: DURATION}.get(media_id)


async def xadd(redis_url: str, events: list[Event]) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with r.pipeline(transaction=False) as pipe:
            for e in events:
                pipe.xadd(STREAM, {"event": e.to_json()})
            await pipe.execute()
    finally:
        await r.aclose()


async def drain(agg: Aggregator) -> int:
    total = 0
    while n := await agg.run_once():
        total += n
    return total


async def aggregate(redis_url: str, events: list[Event], **kw: Any) -> Aggregator:
    await xadd(redis_url, events)
    kw.setdefault("durations", durations)
    agg = Aggregator(redis_url, consumer="test", **kw)
    await drain(agg)
    await agg.stop()
    return agg


async def report(redis_url: str, period: str, media: str = MEDIA,
                 duration: float | None = DURATION) -> dict[str, Any]:
    reader = AnalyticsReader(redis_url)
    try:
        return await reader.media(media, parse_period(period, keys.today()), duration=duration)
    finally:
        await reader.close()


# -- the aggregates ------------------------------------------------------------------------------


async def test_known_sessions_exact_counts(redis_url: str) -> None:
    agg = await aggregate(redis_url, day1_sessions() + day2_sessions())
    assert (agg.applied, agg.duplicates, agg.malformed) == (34, 0, 0)

    r = await report(redis_url, f"{DAY1}..{DAY1}")
    assert r["period"] == {"name": f"{DAY1}..{DAY1}", "from": DAY1, "to": DAY1, "days": 1}
    assert r["playback"] == {"views": 4, "uniqueViewers": 3, "duration": 154.0,
                             "averageViewDuration": 38.5, "completion": 0.5,
                             "completions": 2}
    assert r["quality"] == {"distribution": {"720p": 113.0, "1080p": 29.0, "480p": 12.0},
                            "switches": 1, "average": "720p"}
    assert r["performance"] == {"buffering": 1, "bufferingTime": 3.0,
                                "rebufferingRatio": round(3 / 157, 4), "startup": 1.25,
                                "errors": 2,
                                "errorTypes": {"MEDIA_ERR_DECODE": 1, "NETWORK": 1}}
    assert r["audience"] == {"concurrent": None, "peakConcurrent": None,
                             "geographic": {"DE": 3, "FR": 1},
                             "devices": {"desktop": 2, "mobile": 2}}
    assert r["bandwidth"] == {"average": 5000.0, "bytesServed": 6000}
    assert r["engagement"]["bucketSize"] == 10
    assert [(b["start"], b["watched"], b["rewatched"]) for b in r["engagement"]["heatmap"]] == [
        (0, 4, 1),  # A B C D; bob watched 5..9 twice
        (10, 3, 1),  # A B C (carol's 10..11); bob watched 10..19 twice
        (20, 2, 0),  # A B
        (30, 1, 0),  # A
        (40, 3, 0),  # A C D
        (50, 2, 0),  # A C
    ]
    # Per viewer, all time (both of alice's sessions; dave watched the next day).
    assert r["viewers"] == [
        {"user": "alice", "watched": 80.0, "furthest": 60.0, "completion": 1.0,
         "completed": True},
        {"user": "bob", "watched": 45.0, "furthest": 30.0, "completion": 0.5,
         "completed": False},
        {"user": "carol", "watched": 29.0, "furthest": 57.0, "completion": 1.0,
         "completed": True},
        {"user": "dave", "watched": 20.0, "furthest": 20.0, "completion": round(20 / 60, 4),
         "completed": False},
    ]
    assert r["daily"] == [{"date": DAY1, "views": 4, "uniqueViewers": 3, "playtime": 154.0}]

    both = await report(redis_url, f"{DAY1}..{DAY2}")
    assert both["playback"]["views"] == 5 and both["playback"]["uniqueViewers"] == 4
    assert both["playback"]["duration"] == 174.0
    assert both["audience"]["geographic"] == {"DE": 3, "FR": 1, "US": 1}
    assert both["daily"] == [
        {"date": DAY1, "views": 4, "uniqueViewers": 3, "playtime": 154.0},
        {"date": DAY2, "views": 1, "uniqueViewers": 1, "playtime": 20.0}]
    nothing = await report(redis_url, "2024-03-07..2024-03-09")
    assert nothing["playback"]["views"] == 0 and nothing["quality"]["average"] is None
    assert [b["watched"] for b in nothing["engagement"]["heatmap"]] == [0] * 6


async def test_redelivered_events_count_once(redis_url: str) -> None:
    events = day1_sessions()
    await aggregate(redis_url, events)
    first = await report(redis_url, f"{DAY1}..{DAY1}")
    # The same events again (a producer retry, a replayed stream): all recognised.
    agg = await aggregate(redis_url, events)
    assert (agg.applied, agg.duplicates) == (0, len(events))
    assert await report(redis_url, f"{DAY1}..{DAY1}") == first


async def test_malformed_entries_are_skipped(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xadd(STREAM, {"event": "{not json"})
    await r.xadd(STREAM, {"other": "field"})
    await r.xadd(STREAM, {"event": json.dumps({"type": "teleport", "media_id": MEDIA,
                                               "timestamp": T0, "id": "x1"})})
    await r.xadd(STREAM, {"event": json.dumps({"type": "play", "media_id": "a:b",
                                               "timestamp": T0, "id": "x2"})})
    await r.xadd(STREAM, {"event": json.dumps({"type": "play", "media_id": MEDIA,
                                               "timestamp": 1e20, "id": "x3"})})
    await r.xadd(STREAM, {"event": '{"type":"heartbeat","media_id":"m","timestamp":1709632800,'
                                   '"position":NaN,"id":"x4"}'})
    await r.aclose()
    agg = await aggregate(redis_url, [ev("play", 0, "S", "u", position=0.0)])
    assert (agg.applied, agg.malformed) == (1, 6)
    assert (await report(redis_url, f"{DAY1}..{DAY1}"))["playback"]["views"] == 1


async def test_rebuffering_from_events_and_reported_totals(redis_url: str) -> None:
    """Stalls come from buffering_start/_end, or from the totals a beacon reports
    (buffering {count, duration}: the session's so far); a session sending both counts once."""
    events = session("R1", "rita", "DE", "desktop", [  # totals only, on heartbeats
        ("play", 0, 0.0, {"quality": "720p"}),
        ("heartbeat", 10, 8.0, {"buffering_count": 1, "buffering_duration": 2.0}),
        ("heartbeat", 20, 15.0, {"buffering_count": 2, "buffering_duration": 5.0}),
        ("heartbeat", 30, 25.0, {"buffering_count": 2, "buffering_duration": 5.0})])
    events += session("R2", "rolf", "DE", "desktop", [  # events, and the same totals
        ("play", 0, 0.0, {"quality": "720p"}),
        ("buffering_start", 5, 5.0),
        ("buffering_end", 7, 5.0, {"buffering_count": 1, "buffering_duration": 2.0}),
        ("heartbeat", 10, 8.0, {"buffering_count": 1, "buffering_duration": 2.0})])
    await aggregate(redis_url, events)
    r = await report(redis_url, f"{DAY1}..{DAY1}")
    # R1: 8 + 7 + 10 s watched, 2 stalls, 5 s; R2: 5 + 3 s watched, 1 stall, 2 s.
    assert r["playback"]["duration"] == 33.0
    assert r["performance"]["buffering"] == 3 and r["performance"]["bufferingTime"] == 7.0
    assert r["performance"]["rebufferingRatio"] == round(7 / 40, 4)


async def test_late_event_counts_but_draws_no_span(redis_url: str) -> None:
    """An event older than what its session already applied (e.g. reclaimed after newer ones
    were read) still counts (views, errors, completion) but adds no watched time."""
    events = [ev("play", 0, "S", "sam", position=0.0, quality="720p"),
              ev("heartbeat", 10, "S", "sam", position=10.0),
              ev("heartbeat", 20, "S", "sam", position=20.0)]
    late = [ev("error", 15, "S", "sam", position=15.0, error="LATE"),
            ev("ended", 60, "S", "sam", position=60.0)]
    await aggregate(redis_url, [events[0], events[2], late[0], events[1], late[1]])
    r = await report(redis_url, f"{DAY1}..{DAY1}")
    # 0 → 20 is a 20 s gap (not < 2 × 10 s): nothing; 20 → 60 not playing-contiguous either
    # (40 s gap). The heartbeat at 10 and the error at 15 arrive late: no spans from them.
    assert r["playback"]["duration"] == 0.0
    assert r["playback"]["views"] == 1 and r["playback"]["completions"] == 1
    assert r["performance"]["errorTypes"] == {"LATE": 1}
    rc = aioredis.Redis.from_url(redis_url, decode_responses=True)
    assert await rc.hget(keys.day_key(MEDIA, "20240305", "c"), "late") == "2"
    await rc.aclose()


async def test_live_concurrent_viewers_and_peak(redis_url: str) -> None:
    """Sessions seen within 30 s count as watching: from heartbeats or served segments."""
    live = "live_lecture"
    base = time.time() - 60
    events = [ev("play", 0, "L1", "u1", media=live, base=base, position=0.0)]
    events += [ev("heartbeat", t, "L1", "u1", media=live, base=base, position=float(t))
               for t in (10, 20, 30, 40, 50, 55)]
    events += [ev("heartbeat", t, "L2", "u2", media=live, base=base, position=float(t))
               for t in (5, 15)]
    events += [ev("segment", t, "L3", media=live, base=base, bytes=500) for t in (12, 16, 20)]
    events += [ev("heartbeat", 22, "L4", "u4", media=live, base=base, position=22.0),
               ev("heartbeat", 25, "L2", "u2", media=live, base=base, position=25.0),
               ev("heartbeat", 50, "L2", "u2", media=live, base=base, position=50.0)]
    events.sort(key=lambda e: e.timestamp)
    await aggregate(redis_url, events)
    r = await report(redis_url, "last24h", media=live, duration=None)
    # At +22 s: L1 (20), L2 (15), L3 (20), L4 (22) → 4. Now: L1 (55) and L2 (50) only.
    assert r["audience"]["peakConcurrent"] == 4
    assert r["audience"]["concurrent"] == 2
    assert r["live"] is True and r["playback"]["completion"] is None
    assert r["bandwidth"]["bytesServed"] == 1500
    assert r["engagement"]["heatmap"] == []


# -- crash safety ----------------------------------------------------------------------------------


def crowd(n_sessions: int, seed: int = 7) -> list[Event]:
    """Many sessions interleaved the way beacons of concurrent viewers arrive (each
    session's own events stay in order): heartbeats, switches, stalls, seeks, endings."""
    rng = random.Random(seed)
    per_session: list[list[Event]] = []
    for s in range(n_sessions):
        sid, user = f"s{s}", f"user{s % (n_sessions // 2 or 1)}"
        t0, q = rng.uniform(0, 600), rng.choice(["360p", "720p", "1080p"])
        steps: list[tuple[Any, ...]] = [
            ("play", t0, 0.0, {"quality": q, "startup_time": round(rng.uniform(0.2, 3), 3),
                               "bandwidth": rng.choice([1500.0, 4000.0, 9000.0])})]
        t, pos = t0, 0.0
        while pos < DURATION and len(steps) < 14:
            step = rng.uniform(4, 12)
            t, pos = t + step, min(DURATION, pos + step)
            kind = rng.choice(["heartbeat"] * 6 + ["quality_change", "buffering", "seek",
                                                   "error"])
            if kind == "quality_change":
                steps.append((kind, t, pos, {"quality": rng.choice(["360p", "720p"])}))
            elif kind == "buffering":
                steps.append(("buffering_start", t, pos))
                t += rng.uniform(0.5, 4)
                steps.append(("buffering_end", t, pos))
            elif kind == "seek":
                pos = rng.uniform(0, DURATION - 5)
                steps.append(("seek", t, pos))
            elif kind == "error":
                steps.append(("error", t, pos, {"error": rng.choice(["E1", "E2"])}))
            else:
                steps.append(("heartbeat", t, pos))
        if pos >= DURATION:
            steps.append(("ended", t + 0.5, DURATION))
        per_session.append(session(sid, user, rng.choice(["DE", "FR", "IT"]),
                                   rng.choice(["desktop", "mobile"]), steps))
    merged: list[Event] = []
    while per_session:  # interleave, keeping each session's order
        s = rng.randrange(len(per_session))
        merged.append(per_session[s].pop(0))
        if not per_session[s]:
            per_session.pop(s)
    return merged


async def snapshot(redis_url: str) -> dict[str, Any]:
    """Every aggregate key (working state and guards left out), comparable across runs."""
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        async for key in r.scan_iter("analytics:*"):
            if key.startswith(("analytics:seen:", "analytics:session:")):
                continue
            kind = await r.type(key)
            if kind == "hash":
                out[key] = await r.hgetall(key)
            elif kind == "zset":
                out[key] = await r.zrange(key, 0, -1, withscores=True)
            elif key.endswith(":u"):
                out[key] = await r.pfcount(key)
            else:
                raise AssertionError(f"unexpected {kind} {key}")
        return out
    finally:
        await r.aclose()


def other_db(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


async def test_killed_mid_batch_counts_nothing_twice(redis_url: str) -> None:
    """An aggregator cancelled after applying part of a batch (nothing acknowledged) and a
    new one taking over its entries end with exactly the aggregates of a clean run."""
    events = crowd(60)
    assert len(events) > 500
    clean_url = other_db(redis_url, 1)
    await aggregate(clean_url, events)
    clean = await snapshot(clean_url)
    assert any(k.endswith(":heat") for k in clean) and len(clean) > 8

    await xadd(redis_url, events)
    doomed = Aggregator(redis_url, durations=durations, consumer="doomed", batch=400)
    chunks = 0
    original = doomed._apply_chunk

    async def apply_then_die(entries: Any) -> None:
        nonlocal chunks
        if chunks == 2:  # 200 of the 400 applied, none acknowledged
            await asyncio.Event().wait()  # ...and here it hangs until it is killed
        chunks += 1
        await original(entries)

    doomed._apply_chunk = apply_then_die  # type: ignore[method-assign]
    task = asyncio.create_task(doomed.run_once())
    while doomed.applied < 200:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await doomed.stop()
    r = aioredis.Redis.from_url(redis_url)
    assert (await r.xpending(STREAM, "aggregators"))["pending"] == 400
    await r.aclose()

    await asyncio.sleep(0.3)
    heir = Aggregator(redis_url, durations=durations, consumer="heir", claim_idle=0.2)
    await drain(heir)
    await heir.stop()
    assert heir.duplicates == 200 and heir.applied == len(events) - 200
    assert await snapshot(redis_url) == clean
    assert await report(redis_url, f"{DAY1}..{DAY1}") == await report(clean_url,
                                                                      f"{DAY1}..{DAY1}")


async def test_restart_under_same_name_resumes_own_pending(redis_url: str) -> None:
    """A restarted process with the same consumer name (a container's host and pid) takes its
    own unacknowledged entries first, without waiting for claim_idle."""
    events = day1_sessions()
    await xadd(redis_url, events)
    first = Aggregator(redis_url, durations=durations, consumer="pod-1", batch=10)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await first._ensure_group()
    await r.xreadgroup("aggregators", "pod-1", {STREAM: ">"}, count=10)  # read, never applied
    await first.stop()
    again = Aggregator(redis_url, durations=durations, consumer="pod-1", claim_idle=3600)
    await drain(again)
    await again.stop()
    assert again.applied == len(events)
    assert (await r.xpending(STREAM, "aggregators"))["pending"] == 0
    await r.aclose()
    assert (await report(redis_url, f"{DAY1}..{DAY1}"))["playback"]["duration"] == 154.0


async def test_worker_killed_by_sigkill_counts_nothing_twice(redis_url: str,
                                                             tmp_path: Path) -> None:
    """`mediaorigin worker` aggregates the stream; kill -9 it mid-stream, let another
    aggregator take over: the aggregates equal a clean run's, key for key."""
    events = crowd(600, seed=11)
    clean_url = other_db(redis_url, 1)
    await aggregate(clean_url, events, durations=None)  # the worker's library has no durations
    clean = await snapshot(clean_url)

    await xadd(redis_url, events)
    env = {**os.environ, "MEDIAORIGIN_REDIS_URL": redis_url,
           "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{tmp_path}/library.sqlite3",
           "MEDIAORIGIN_JOBS_BACKEND": "inprocess"}  # a worker for analytics only
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mediaorigin.cli", "worker"],
                                cwd=tmp_path, env=env, stdout=log, stderr=log)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never got going"
            group = await aggregators(r)
            if group and int(group["entries-read"] or 0) >= len(events) // 4:
                # Best when part of the batch in hand is applied and none acknowledged:
                # applied (one guard key per event) > acknowledged.
                acked = int(group["entries-read"]) - int(group["pending"])
                seen = [k async for k in r.scan_iter("analytics:seen:*", count=10000)]
                if len(seen) > acked:
                    break
            await asyncio.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        group = await aggregators(r)
        assert group is not None and int(group["lag"]) > 0, "the worker finished first"
        left = int(group["lag"]) + int(group["pending"])
    finally:
        await r.aclose()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    await asyncio.sleep(0.3)
    heir = Aggregator(redis_url, consumer="heir", claim_idle=0.2)
    await drain(heir)
    await heir.stop()
    assert heir.applied + heir.duplicates == left
    assert await snapshot(redis_url) == clean


async def aggregators(r: aioredis.Redis) -> dict[str, Any] | None:
    """XINFO GROUPS entry of the aggregators' group (None before it exists)."""
    try:
        groups = await r.xinfo_groups(STREAM)
    except aioredis.ResponseError:
        return None
    return next((g for g in groups if g["name"] == "aggregators"), None)


async def test_aggregator_rides_out_a_redis_outage(tmp_path: Path) -> None:
    """Started with Redis down it retries in the background; once Redis is there it counts
    what arrives, and a restart of Redis without its data (the group is gone) is survived."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    agg = Aggregator(server.url, durations=durations, consumer="patient")
    await agg.start()  # never raises: nothing listens yet
    try:
        await asyncio.sleep(0.3)
        server.start()
        await xadd(server.url, day1_sessions())
        await until(lambda: agg.applied == 31)
        server.stop()
        await asyncio.sleep(0.3)
        server.start()  # empty: no stream, no group, no aggregates
        await xadd(server.url, day2_sessions())
        await until(lambda: agg.applied == 34)
    finally:
        await agg.stop()
        server.close()


async def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# -- API -------------------------------------------------------------------------------------------


@pytest.fixture
def analytics_origin(tmp_path: Path, redis_url: str) -> Iterator[OriginThread]:
    """An origin + library whose analytics (emitter, in-process aggregator, reader) use the
    test Redis."""
    origin = OriginThread(make_library_config(tmp_path, redis={"url": redis_url},
                                               analytics={"enabled": True})).start()
    yield origin
    origin.stop()


async def settled(redis_url: str, timeout: float = 15.0) -> None:
    """Until the server's aggregator has applied everything in the stream."""
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            group = await aggregators(r)
            if group and int(group["pending"]) == 0 and int(group["lag"] or 0) == 0:
                return
            assert time.monotonic() < deadline, f"aggregation did not settle: {group}"
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()


def get(origin: OriginThread, path: str, key: str = ADMIN_KEY) -> tuple[int, Any]:
    reply = origin.get(path, auth(key))
    ctype = reply.headers.get("content-type", "")
    return reply.status, reply.json() if ctype.startswith("application/json") else reply


async def test_api_queries_reports_and_record(analytics_origin: OriginThread, redis_url: str,
                                             av_faststart: Path) -> None:
    origin = analytics_origin
    media_id = origin.add([av_faststart], "Analytics lecture")
    assert origin.request("PATCH", f"/api/media/{media_id}",
                          json.dumps({"organization": "org-a"}).encode(), auth()).status == 200
    duration = get(origin, f"/api/media/{media_id}")[1]["metadata"]["duration"]
    assert 4 < duration < 10

    now = time.time()
    base = max(now // 86400 * 86400 + 1, now - 60)  # today (UTC), a minute ago
    old = base - 10 * 86400
    today, old_day = (keys.today(t) for t in (base, old))
    ann = session("ann", "ann", "DE", "desktop", [
        ("play", 0, 0.0, {"quality": "720p", "startup_time": 1.0}),
        ("heartbeat", 2, 2.0), ("heartbeat", 4, 4.0), ("ended", duration, duration)],
        media=media_id, base=base)
    ben = session("ben", "ben", "FR", "mobile", [
        ("play", 0, 0.0, {"quality": "480p"}), ("heartbeat", 2, 2.0)],
        media=media_id, base=old)
    await xadd(redis_url, ann + ben)
    # The origin's own events: a manifest and a segment played openly (no session).
    master = origin.get(f"/vod/{media_id}/master.m3u8").body.decode()
    variant = next(line for line in master.splitlines() if line and not line.startswith("#"))
    playlist = origin.get(f"/vod/{media_id}/{variant}").body.decode()
    first = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
    segment = origin.get(f"/vod/{media_id}/{variant.rsplit('/', 1)[0]}/{first}"
                         if "/" in variant else f"/vod/{media_id}/{first}")
    assert segment.status == 200
    await asyncio.sleep(0.3)  # the emitter sends off the response path
    await settled(redis_url)

    status, body = get(origin, f"/api/media/{media_id}/analytics?period=today")
    assert status == 200, body
    assert set(body) == {"mediaId", "live", "period", "playback", "quality", "performance",
                         "audience", "bandwidth", "engagement", "viewers", "daily"}
    assert body["period"] == {"name": "today", "from": today.isoformat(),
                              "to": today.isoformat(), "days": 1}
    p = body["playback"]
    assert (p["views"], p["uniqueViewers"], p["completion"], p["completions"]) == (1, 1, 1.0, 1)
    assert p["duration"] == pytest.approx(duration, abs=0.002)
    assert body["quality"]["distribution"] == {"720p": p["duration"]}
    assert body["performance"]["startup"] == 1.0
    assert body["audience"]["geographic"] == {"DE": 1}
    assert body["bandwidth"]["bytesServed"] >= len(segment.body)
    assert body["engagement"]["heatmap"] == [{"start": 0, "end": 10, "watched": 1,
                                              "rewatched": 0}]
    assert body["viewers"][0]["user"] == "ann" and body["viewers"][0]["completed"] is True

    def views(query: str) -> int:
        status, found = get(origin, f"/api/media/{media_id}/analytics?{query}")
        assert status == 200, found
        return int(found["playback"]["views"])

    assert views("period=last7d") == 1
    assert views("period=last30d") == 2
    assert views(f"period={old_day}..{old_day}") == 1
    assert views("") == 1  # default: last7d
    status, only = get(origin, f"/api/media/{media_id}/analytics?period=last30d"
                       "&metrics=views,quality")
    assert set(only) == {"mediaId", "live", "period", "playback", "quality"}
    assert only["quality"]["distribution"] == {"720p": p["duration"], "480p": 2.0}
    assert only["playback"]["uniqueViewers"] == 2
    for bad in ("period=lastyear", "metrics=views,bogus", "period=2024-03-10..2024-03-01",
                "period=2024-13-01..2024-13-02"):
        status, err = get(origin, f"/api/media/{media_id}/analytics?{bad}")
        assert status == 422 and err["error"]["code"] == "invalid_query", (bad, err)

    # Who may ask: the item's organization (404 for another one), not students.
    assert get(origin, f"/api/media/{media_id}/analytics", INSTRUCTOR_KEY)[0] == 200
    status, err = get(origin, f"/api/media/{media_id}/analytics", OTHER_ORG_KEY)
    assert status == 404 and err["error"]["code"] == "media_not_found"
    assert get(origin, f"/api/media/{media_id}/reports", OTHER_ORG_KEY)[0] == 404
    assert get(origin, f"/api/media/{media_id}/analytics", STUDENT_KEY)[0] == 403
    assert get(origin, "/api/media/nosuchmedia/analytics")[0] == 404
    assert get(origin, "/api/media/live_nosuchstream/analytics")[0] == 404
    created = origin.request("POST", "/api/live", json.dumps({"title": "Live"}).encode(),
                             auth(INSTRUCTOR_KEY))
    live_id = created.json()["id"]
    status, live = get(origin, f"/api/media/{live_id}/analytics", INSTRUCTOR_KEY)
    assert status == 200 and live["live"] is True and live["audience"]["concurrent"] == 0
    assert get(origin, f"/api/media/{live_id}/analytics", OTHER_ORG_KEY)[0] == 404

    # The media record's analytics block: all-time totals.
    record = get(origin, f"/api/media/{media_id}")[1]["analytics"]
    assert record["views"] == 2 and record["uniqueViewers"] == 2
    assert record["totalPlaytime"] == pytest.approx(duration + 2, abs=0.002)
    assert record["averageViewDuration"] == pytest.approx((duration + 2) / 2, abs=0.002)
    assert record["qualityDistribution"] == {"720p": p["duration"], "480p": 2.0}
    assert set(record) == {"views", "uniqueViewers", "totalPlaytime", "averageViewDuration",
                           "qualityDistribution", "bandwidth"}

    # Reports.
    status, rep = get(origin, f"/api/media/{media_id}/reports?type=engagement&period=last30d")
    assert status == 200 and rep["type"] == "engagement" and rep["title"] == "Analytics lecture"
    assert {"playback", "engagement", "viewers", "daily"} <= set(rep) and "quality" not in rep
    assert rep["engagement"]["heatmap"][0]["watched"] == 2  # ann and ben
    assert len(rep["daily"]) == 30

    reply = origin.get(f"/api/media/{media_id}/reports?type=performance&format=csv"
                       "&period=last30d", auth())
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/csv")
    assert f'filename="{media_id}-performance-' in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert len(rows) == 30 and rows[-1]["date"] == keys.today().isoformat()
    by_date = {row["date"]: row for row in rows}
    assert by_date[today.isoformat()]["views"] == "1"
    assert by_date[today.isoformat()]["completions"] == "1"
    assert by_date[old_day.isoformat()]["views"] == "1"
    assert by_date[old_day.isoformat()]["playtime"] == "2.0"
    assert sum(int(row["views"]) for row in rows) == 2

    reply = origin.get(f"/api/media/{media_id}/reports?type=engagement&format=csv"
                       "&period=last30d", auth())
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert rows == [{"start": "0", "end": "10", "watched": "2", "rewatched": "0"}]

    for kind in ("performance", "engagement"):
        reply = origin.get(f"/api/media/{media_id}/reports?type={kind}&format=pdf"
                           "&period=last30d", auth())
        assert reply.status == 200 and reply.headers["content-type"] == "application/pdf"
        assert reply.body.startswith(b"%PDF")
        pdf = pypdfium2.PdfDocument(reply.body)
        try:
            assert len(pdf) >= 1
            text = "".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
        finally:
            pdf.close()
        assert "Analytics lecture" in text and "Views per day" in text
        assert "Quality distribution" in text and "Engagement heatmap" in text
    for bad in ("type=summary", "format=xlsx"):
        status, err = get(origin, f"/api/media/{media_id}/reports?{bad}")
        assert status == 422 and err["error"]["code"] == "invalid_query"


async def test_processing_analytics(analytics_origin: OriginThread, compliant_mp4: Path,
                                    tmp_path: Path) -> None:
    """Jobs of the library: one passthrough that succeeds (org-a), one upload that fails."""
    import media

    origin = analytics_origin
    broken = media.garbage(tmp_path, 4096, "broken.mp4")
    async with aiohttp.ClientSession(base_url=origin.base) as http:
        ids = []
        for path, key in ((compliant_mp4, INSTRUCTOR_KEY), (broken, ADMIN_KEY)):
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(path.read_bytes()), filename=path.name,
                           content_type="application/octet-stream")
            async with http.post("/api/media/upload", data=form, headers=auth(key)) as resp:
                assert resp.status == 201, await resp.text()
                ids.append((await resp.json())["id"])
        states = {}
        deadline = time.monotonic() + 60
        while len(states) < 2:
            assert time.monotonic() < deadline, states
            for media_id in ids:
                async with http.get(f"/api/media/{media_id}/status", headers=auth()) as resp:
                    state = await resp.json()
                if state["jobStatus"] in ("completed", "failed"):
                    states[media_id] = state
            await asyncio.sleep(0.2)
    assert [states[i]["jobStatus"] for i in ids] == ["completed", "failed"]
    code = states[ids[1]]["error"]["code"]

    status, body = get(origin, "/api/analytics/processing")
    assert status == 200, body
    assert body["jobs"] == {"total": 2, "success": 1, "failed": 1, "cancelled": 0,
                            "running": 0, "queued": 0}
    assert body["performance"]["queue"] == 0 and body["performance"]["averageTime"] > 0
    assert body["errors"] == {"types": {code: 1}, "frequency": {code: 0.5}, "impact": 1}
    assert body["organization"] is None

    status, mine = get(origin, "/api/analytics/processing", INSTRUCTOR_KEY)
    assert mine["jobs"]["total"] == 1 and mine["jobs"]["success"] == 1
    assert mine["errors"]["types"] == {} and mine["organization"] == "org-a"
    assert get(origin, "/api/analytics/processing?organization=org-a")[1]["jobs"]["total"] == 1
    assert get(origin, "/api/analytics/processing", OTHER_ORG_KEY)[1]["jobs"]["total"] == 0
    assert get(origin, "/api/analytics/processing", STUDENT_KEY)[0] == 403
    assert get(origin, "/api/analytics/processing?period=today")[1]["jobs"]["total"] == 2
    assert get(origin, "/api/analytics/processing?period=2020-01-01..2020-01-02"
               )[1]["jobs"]["total"] == 0
    assert get(origin, "/api/analytics/processing?period=never")[0] == 422


async def test_origin_with_redis_down(tmp_path: Path, av_faststart: Path) -> None:
    """Analytics on, Redis away: the origin starts and serves, the record keeps its stored
    analytics block, the queries answer 503."""
    nowhere = RedisServer(tmp_path / "nothing").url  # a free port, never started
    origin = OriginThread(make_library_config(tmp_path, redis={"url": nowhere},
                                              analytics={"enabled": True})).start()
    try:
        media_id = origin.add([av_faststart], "No Redis")
        assert origin.get("/healthz").status == 200
        assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200
        status, record = get(origin, f"/api/media/{media_id}")
        assert status == 200 and record["analytics"]["views"] == 0
        status, err = get(origin, f"/api/media/{media_id}/analytics")
        assert status == 503 and err["error"]["code"] == "analytics_unavailable"
    finally:
        origin.stop()
