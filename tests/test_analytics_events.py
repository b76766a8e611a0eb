"""Analytics events into the Redis stream, against a private redis-server: player beacons
(validated, viewer from the token), one event per manifest and segment served, Redis away
(buffered, then delivered once; overflow counted and logged) and MAXLEN ~ trimming.

Counts are exact: each check waits until the origin's emitter has nothing buffered, then
reads the stream with redis-py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from library_fixtures import auth, library_config
from media import run_ffmpeg
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from origin_server import OriginThread, Reply
from redis_server import RedisServer

from mediaorigin.analytics import emitter as emitter_module
from mediaorigin.analytics.emitter import EMITTER, EventEmitter
from mediaorigin.analytics.events import STREAM, Event, Served, new_event_id, served_json
from mediaorigin.auth.tokens import Keyring, parse_hs256_secret

SECRET = base64.b64encode(b"b" * 32).decode()
MAX_EVENTS = 20
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
GB = "81.2.69.7"  # in the generated GeoIP database


def analytics_config(root: Path, redis_url: str, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    analytics = {"enabled": True, "max_beacon_events": MAX_EVENTS, **sections.pop("analytics", {})}
    return library_config(root, redis={"url": redis_url}, analytics=analytics, **sections)


def emitter_of(origin: OriginThread) -> EventEmitter:
    assert origin._runner is not None
    found = origin._runner.app[EMITTER]
    assert isinstance(found, EventEmitter)
    return found


def stats_of(origin: OriginThread) -> dict[str, Any]:
    """The emitter's stats, read on the origin's own loop (never between two updates)."""
    async def read() -> dict[str, Any]:
        return emitter_of(origin).stats()

    assert origin._loop is not None
    return asyncio.run_coroutine_threadsafe(read(), origin._loop).result(5)


def settle(origin: OriginThread, timeout: float = 15.0) -> dict[str, Any]:
    """The emitter's stats once nothing is buffered (everything emitted was sent)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = stats_of(origin)
        if stats["buffered"] == 0:
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.02)


def stream(r: redis.Redis) -> list[dict[str, Any]]:
    entries = r.xrange(STREAM)
    for _, fields in entries:
        assert list(fields) == [b"event"]  # one field per entry
    return [json.loads(fields[b"event"]) for _, fields in entries]


def post(origin: OriginThread, media_id: str, body: Any, query: str = "",
         headers: dict[str, str] | None = None) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return origin.request("POST", f"/api/media/{media_id}/analytics{query}", raw,
                          {"Content-Type": "application/json", "User-Agent": IPHONE,
                           **(headers or {})})


def keyring() -> Keyring:
    return Keyring([parse_hs256_secret(f"k1:{SECRET}")], issuer="mediaorigin")


def token(media: str, **claims: Any) -> str:
    return keyring().issue(now=time.time(), media=media, ttl=600, **claims)


def beacon(**fields: Any) -> dict[str, Any]:
    return {"event": "play", "timestamp": int(time.time() * 1000), "position": 30,
            "quality": "720p", "buffering": {"count": 1, "duration": 2.5},
            "network": {"bandwidth": 5000, "type": "wifi"}, "sessionId": "sess-1",
            "userId": "ada", "startupTime": 1.2, **fields}


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("geo") / "country.mmdb"
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    country = {"iso_code": "GB", "names": {"en": "GB"}}
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": country,
                                                    "registered_country": country})
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def open_origin(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer,
                av_faststart: Path, geoip: Path) -> Iterator[tuple[OriginThread, str]]:
    """Open playback behind a trusted proxy (so X-Forwarded-For picks the country)."""
    config = analytics_config(tmp_path_factory.mktemp("open"), redis_server.url, auth={
        "trusted_proxies": "127.0.0.1/32", "geoip_database": str(geoip)})
    origin = OriginThread(config).start()
    media_id = origin.add([av_faststart], "Analytics lecture")
    yield origin, media_id
    origin.stop()


@pytest.fixture(scope="module")
def token_origin(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer,
                 av_faststart: Path) -> Iterator[tuple[OriginThread, str, str]]:
    config = analytics_config(tmp_path_factory.mktemp("token"), redis_server.url, auth={
        "playback": "token", "token_secrets": f"k1:{SECRET}"})
    origin = OriginThread(config).start()
    first = origin.add([av_faststart], "Token lecture")
    second = origin.add([av_faststart], "Another lecture")
    yield origin, first, second
    origin.stop()


# -- beacons ------------------------------------------------------------------------------------

def test_single_and_batched_beacons(open_origin: tuple[OriginThread, str],
                                    r: redis.Redis) -> None:
    origin, media_id = open_origin
    now_ms = int(time.time() * 1000)
    one = post(origin, media_id, beacon(timestamp=now_ms), headers={"X-Forwarded-For": GB})
    assert (one.status, one.json()) == (202, {"accepted": 1})
    batch = [beacon(event="heartbeat", position=40, sessionId="sess-2", userId=None),
             beacon(event="error", error="MEDIA_ERR_DECODE", sessionId="sess-2"),
             {"event": "ended", "sessionId": "sess-3"}]
    many = post(origin, media_id, {"events": batch}, headers={"User-Agent": DESKTOP})
    assert (many.status, many.json()) == (202, {"accepted": 3})
    assert settle(origin)["dropped"] == 0
    events = stream(r)
    assert len(events) == 4 and len({e["id"] for e in events}) == 4
    first = events[0]
    assert {k: v for k, v in first.items() if k != "id"} == {
        "type": "play", "media_id": media_id, "timestamp": now_ms / 1000, "session": "sess-1",
        "user": "ada", "position": 30, "quality": "720p", "buffering_count": 1,
        "buffering_duration": 2.5, "bandwidth": 5000, "network_type": "wifi",
        "startup_time": 1.2, "country": "GB", "device": "mobile"}
    assert [(e["type"], e["session"], e["user"], e["device"]) for e in events[1:]] == [
        ("heartbeat", "sess-2", "", "desktop"), ("error", "sess-2", "ada", "desktop"),
        ("ended", "sess-3", "", "desktop")]
    assert events[2]["error"] == "MEDIA_ERR_DECODE" and "country" not in events[2]
    # No timestamp: the server's clock.
    assert abs(events[3]["timestamp"] - time.time()) < 60 and "position" not in events[3]
    assert Event.from_json(json.dumps(first)).session == "sess-1"


NOW = "__now__"
BAD: list[tuple[str, Any, int, str, str]] = [
    # (case, body, status, code, text in the message)
    ("unknown event", beacon(event="dance"), 422, "invalid_field", "event"),
    ("origin event", beacon(event="segment"), 422, "invalid_field", "event"),
    ("event missing", {"sessionId": "s"}, 422, "missing_field", "event"),
    ("event as list", beacon(event=["play"]), 422, "invalid_field", "event"),
    ("NaN", b'{"event": "play", "sessionId": "s", "position": NaN}', 422, "invalid_field",
     "NaN"),
    ("Infinity", b'{"event": "play", "sessionId": "s", "startupTime": Infinity}', 422,
     "invalid_field", "Infinity"),
    ("overflowing float", b'{"event": "play", "sessionId": "s", "position": 1e999}', 422,
     "invalid_field", "position"),
    ("negative", beacon(position=-1), 422, "invalid_field", "position"),
    ("huge", beacon(position=1e12), 422, "invalid_field", "position"),
    ("huge bandwidth", beacon(network={"bandwidth": 1e15}), 422, "invalid_field",
     "network.bandwidth"),
    ("string number", beacon(position="30"), 422, "invalid_field", "position"),
    ("bool number", beacon(startupTime=True), 422, "invalid_field", "startupTime"),
    ("fractional count", beacon(buffering={"count": 1.5}), 422, "invalid_field",
     "buffering.count"),
    ("buffering as list", beacon(buffering=[1, 2]), 422, "invalid_field", "buffering"),
    ("session as number", beacon(sessionId=7), 422, "invalid_field", "sessionId"),
    ("long quality", beacon(quality="x" * 33), 422, "invalid_field", "quality"),
    ("control characters", beacon(error="a\nb"), 422, "invalid_field", "error"),
    ("timestamp far behind", beacon(timestamp=NOW), 422, "invalid_field", "timestamp"),
    ("timestamp in seconds", beacon(timestamp=int(time.time())), 422, "invalid_field",
     "timestamp"),
    ("timestamp beyond a float", b'{"event": "play", "sessionId": "s", "timestamp": 1'
     + b"0" * 400 + b"}", 422, "invalid_field", "timestamp"),
    ("unknown field", beacon(foo=1), 422, "unknown_field", "foo"),
    ("unknown nested field", beacon(network={"type": "wifi", "speed": 1}), 422,
     "unknown_field", "network.speed"),
    ("unknown field in batch", {"events": [beacon(), beacon(extra=True)]}, 422,
     "unknown_field", "events[1].extra"),
    ("batch and more", {"events": [beacon()], "sessionId": "s"}, 422, "unknown_field",
     "sessionId"),
    ("events not a list", {"events": beacon()}, 422, "invalid_field", "events"),
    ("no events", {"events": []}, 422, "invalid_field", "events"),
    ("not an object", [beacon()], 422, "invalid_field", "body"),
    ("bad item", {"events": [beacon(), 5]}, 422, "invalid_field", "events[1]"),
    ("bad JSON", b'{"event": "play",', 400, "invalid_json", "JSON"),
    ("not UTF-8", b'{"event": "\xff"}', 400, "invalid_json", "JSON"),
    ("too many events", {"events": [beacon()] * (MAX_EVENTS + 1)}, 413, "too_many_events",
     str(MAX_EVENTS)),
    ("too large", b"[" + b" " * (MAX_EVENTS * 2048) + b"]", 413, "too_large", "bytes"),
    ("no session (open playback)", beacon(sessionId=None), 422, "missing_field",
     "sessionId"),
    ("no session in a batch", {"events": [beacon(), {"event": "pause"}]}, 422,
     "missing_field", "events[1].sessionId"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_beacons_are_refused(open_origin: tuple[OriginThread, str], r: redis.Redis,
                                 case: tuple[str, Any, int, str, str]) -> None:
    origin, media_id = open_origin
    _, body, status, code, text = case
    if isinstance(body, dict) and body.get("timestamp") == NOW:
        body = dict(body, timestamp=int((time.time() - 2 * 86400) * 1000))
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    sent_before = settle(origin)["sent"]
    reply = post(origin, media_id, body)
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert error["code"] == code and text in error["message"], error
    assert settle(origin)["sent"] == sent_before
    assert r.xlen(STREAM) == 0


def test_unknown_media_and_live_stream_ids(open_origin: tuple[OriginThread, str],
                                           r: redis.Redis) -> None:
    origin, media_id = open_origin
    missing = post(origin, "nosuchmedia1", beacon())
    assert missing.status == 404 and missing.json()["error"]["code"] == "media_not_found"
    live = origin.request("POST", "/api/live", json.dumps({"title": "Live"}).encode(),
                          {**auth(), "Content-Type": "application/json"})
    assert live.status == 201, live.body
    live_id = live.json()["id"]  # idle, never published: known to the library
    accepted = post(origin, live_id, {"events": [beacon(), beacon(event="pause")]})
    assert (accepted.status, accepted.json()) == (202, {"accepted": 2})
    unknown = post(origin, "live_nosuchstream", beacon())
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "live_not_found"
    settle(origin)
    assert [(e["type"], e["media_id"]) for e in stream(r)] == [("play", live_id),
                                                              ("pause", live_id)]


def test_token_beacons_take_the_viewer_from_the_token(
        token_origin: tuple[OriginThread, str, str], r: redis.Redis) -> None:
    origin, media_id, other = token_origin
    good = token(media_id, user="grace", session="tok-session")
    # The beacon's own sessionId and userId are ignored when a token is used.
    by_query = post(origin, media_id, beacon(), f"?token={good}")
    by_header = post(origin, media_id, {"events": [beacon(event="pause"), {"event": "seek"}]},
                     headers={"Authorization": f"Bearer {good}"})
    assert (by_query.status, by_header.status) == (202, 202), (by_query.body, by_header.body)
    no_session = token(media_id, user="hopper")  # no sid claim: the token is the session
    assert post(origin, media_id, {"event": "play"}, f"?token={no_session}").status == 202
    refused = {
        "other media": post(origin, media_id, beacon(), f"?token={token(other, user='x')}"),
        "no token": post(origin, media_id, beacon()),
        "forged": post(origin, media_id, beacon(), f"?token={good[:-4]}AAAA"),
        "API key": post(origin, media_id, beacon(), headers=auth()),
    }
    assert {k: v.status for k, v in refused.items()} == dict.fromkeys(refused, 403)
    assert refused["no token"].json()["error"]["code"] == "token_missing"
    settle(origin)
    events = stream(r)
    assert [(e["type"], e["session"], e["user"]) for e in events[:3]] == [
        ("play", "tok-session", "grace"), ("pause", "tok-session", "grace"),
        ("seek", "tok-session", "grace")]
    assert len(events) == 4
    assert events[3]["user"] == "hopper" and len(events[3]["session"]) == 24


def test_disabled_analytics_accept_nothing(tmp_path: Path, redis_url: str, r: redis.Redis,
                                           av_faststart: Path) -> None:
    origin = OriginThread(analytics_config(tmp_path, redis_url,
                                           analytics={"enabled": False})).start()
    try:
        media_id = origin.add([av_faststart], "quiet")
        reply = post(origin, media_id, beacon())
        assert (reply.status, reply.json()) == (202, {"accepted": 0})
        assert post(origin, media_id, beacon(event="dance")).status == 422  # still validated
        assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200
    finally:
        origin.stop()
    assert r.xlen(STREAM) == 0


# -- events of the origin itself ---------------------------------------------------------------

def test_one_event_per_manifest_and_segment(open_origin: tuple[OriginThread, str],
                                            r: redis.Redis) -> None:
    origin, media_id = open_origin
    ua = {"User-Agent": IPHONE}
    served: list[tuple[str, str | None, int]] = []  # (type, rendition, bytes)
    master = origin.get(f"/vod/{media_id}/master.m3u8", ua)
    assert master.status == 200
    served.append(("manifest", None, len(master.body)))
    segments = 0
    for rid in ("v0", "a0"):
        playlist = origin.get(f"/vod/{media_id}/{rid}/media.m3u8", ua)
        assert playlist.status == 200
        served.append(("manifest", rid, len(playlist.body)))
        names = [ln for ln in playlist.body.decode().splitlines()
                 if ln and not ln.startswith("#")]
        for name in ["init.mp4", *names]:
            reply = origin.get(f"/vod/{media_id}/{rid}/{name}", ua)
            assert reply.status == 200 and len(reply.body) > 0
            served.append(("segment", rid, len(reply.body)))
            segments += 1
    assert segments >= 4
    # Not modified and partial answers are served too, with what they carried.
    again = origin.get(f"/vod/{media_id}/v0/seg-1.m4s", ua)
    served.append(("segment", "v0", len(again.body)))
    assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s",
                      {**ua, "If-None-Match": again.headers["etag"]}).status == 304
    served.append(("segment", "v0", 0))
    assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s", {**ua, "Range": "bytes=0-99"}
                      ).status == 206
    served.append(("segment", "v0", 100))
    # Encrypted segments are counted with what they carried too.
    for rid, drm in (("a0", "aes-128"), ("v0", "cenc")):
        sealed = origin.get(f"/vod/{media_id}/{rid}/seg-2.m4s?drm={drm}", ua)
        assert sealed.status == 200 and len(sealed.body) > 0
        served.append(("segment", rid, len(sealed.body)))
    # Refused requests are not "served".
    assert origin.get(f"/vod/{media_id}/v0/seg-99.m4s", ua).status == 404
    settle(origin)
    events = stream(r)
    assert [(e["type"], e.get("rendition"), e["bytes"]) for e in events] == served
    assert [e["status"] for e in events[-5:]] == [200, 304, 206, 200, 200]
    assert sum(e["type"] == "segment" for e in events) == segments + 5
    assert sum(e["type"] == "manifest" for e in events) == 3
    assert {(e["media_id"], e["device"], e["session"], e["user"]) for e in events} == {
        (media_id, "mobile", "", "")}
    assert all("country" not in e for e in events)  # 127.0.0.1 has no country


def test_origin_events_carry_the_token_viewer(token_origin: tuple[OriginThread, str, str],
                                              r: redis.Redis) -> None:
    origin, media_id, _ = token_origin
    good = token(media_id, user="grace", session="tok-session")
    for path in ("master.m3u8", "v0/media.m3u8", "v0/seg-1.m4s"):
        assert origin.get(f"/vod/{media_id}/{path}?token={good}",
                          {"User-Agent": DESKTOP}).status == 200
    assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s").status == 403
    settle(origin)
    assert [(e["type"], e.get("rendition"), e["session"], e["user"], e["device"])
            for e in stream(r)] == [
        ("manifest", None, "tok-session", "grace", "desktop"),
        ("manifest", "v0", "tok-session", "grace", "desktop"),
        ("segment", "v0", "tok-session", "grace", "desktop")]


def test_country_of_origin_events(open_origin: tuple[OriginThread, str],
                                  r: redis.Redis) -> None:
    origin, media_id = open_origin
    assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s", {"X-Forwarded-For": GB}).status == 200
    settle(origin)
    (event,) = stream(r)
    assert (event["country"], event["device"]) == ("GB", "other")


def test_server_events_can_be_turned_off(tmp_path: Path, redis_url: str, r: redis.Redis,
                                         av_faststart: Path) -> None:
    origin = OriginThread(analytics_config(tmp_path, redis_url,
                                           analytics={"server_events": False})).start()
    try:
        media_id = origin.add([av_faststart], "beacons only")
        assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200
        assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s").status == 200
        assert post(origin, media_id, beacon()).status == 202
        settle(origin)
    finally:
        origin.stop()
    assert [e["type"] for e in stream(r)] == ["play"]


def test_live_playback_events(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    """A live lecture: manifests, init and media segments under /live are events of the
    stream id, and beacons for it go through while it is live."""
    clip = tmp_path / "live.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i",
                "sine=frequency=440:sample_rate=48000", "-ac", "2", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-t", "3", str(clip)])
    origin = OriginThread(analytics_config(tmp_path, redis_url, live={
        "reconnect_grace": 30.0})).start()
    try:
        created = origin.request("POST", "/api/live", json.dumps({"title": "Live"}).encode(),
                                 {**auth(), "Content-Type": "application/json"})
        assert created.status == 201, created.body
        stream_ = created.json()
        live_id = stream_["id"]
        url = f"{stream_['rtmp']['url']}/{stream_['rtmp']['streamKey']}"
        publisher = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy",
                                    "-f", "flv", url], timeout=60)
        assert publisher.returncode == 0
        ua = {"User-Agent": IPHONE}
        deadline = time.monotonic() + 20
        while origin.get(f"/live/{live_id}/master.m3u8", ua).status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        playlist = origin.get(f"/live/{live_id}/video/index.m3u8", ua)
        first = re.search(r"^(\d+)\.m4s", playlist.body.decode(), re.M)
        assert playlist.status == 200 and first is not None
        init = origin.get(f"/live/{live_id}/video/init-0.mp4", ua)
        segment = origin.get(f"/live/{live_id}/video/{first[1]}.m4s", ua)
        assert (init.status, segment.status) == (200, 200)
        assert post(origin, live_id, beacon()).status == 202
        settle(origin)
        events = stream(r)
        masters = [e for e in events if e["type"] == "manifest" and "rendition" not in e]
        assert masters and all(e["media_id"] == live_id for e in events)
        assert [(e["type"], e.get("rendition"), e.get("bytes"))
                for e in events[len(masters):]] == [
            ("manifest", "video", len(playlist.body)), ("segment", "video", len(init.body)),
            ("segment", "video", len(segment.body)), ("play", None, None)]
        assert {e["device"] for e in events} == {"mobile"}
    finally:
        origin.stop()


# -- Redis away -----------------------------------------------------------------------------------

def test_redis_down_during_playback(tmp_path: Path, av_faststart: Path) -> None:
    """Playback goes on; events wait and arrive once Redis is back, each exactly once."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    origin = OriginThread(analytics_config(tmp_path, server.url)).start()
    try:
        media_id = origin.add([av_faststart], "outage")
        assert origin.get(f"/vod/{media_id}/v0/seg-1.m4s").status == 200
        settle(origin)
        assert client.xlen(STREAM) == 1
        server.kill()  # as if the host died
        paths = [f"/vod/{media_id}/{rid}/seg-{n}.m4s" for rid in ("v0", "a0") for n in (1, 2)]
        paths = paths * 5
        statuses = [origin.get(p).status for p in paths]
        assert statuses == [200] * len(paths)
        deadline = time.monotonic() + 10
        while (stats := stats_of(origin))["redis_errors"] == 0:  # the sender has tried
            assert time.monotonic() < deadline, stats
            time.sleep(0.02)
        assert stats["buffered"] == len(paths) and stats["dropped"] == 0, stats
        assert not stats["connected"]
        server.start()  # same port, empty (no persistence)
        stats = settle(origin)
        assert stats["connected"] and stats["sent"] == 1 + len(paths)
        events = stream(client)
        assert len(events) == len(paths) and len({e["id"] for e in events}) == len(paths)
        assert [f"/vod/{media_id}/{e['rendition']}/" for e in events] == \
            [p.rsplit("/", 1)[0] + "/" for p in paths]  # in order
    finally:
        origin.stop()
        client.close()
        server.close()


def test_overflow_drops_the_oldest_and_says_so(tmp_path: Path, av_faststart: Path,
                                               caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emitter_module, "DROP_WARNING_INTERVAL", 0.0)  # log every drop
    dead = RedisServer(tmp_path / "nothing-listens")  # a free port, never started
    origin = OriginThread(analytics_config(tmp_path, dead.url, analytics={
        "buffer": 10, "max_beacon_events": 25, "server_events": False})).start()
    try:
        media_id = origin.add([av_faststart], "overflow")
        with caplog.at_level(logging.WARNING, logger="mediaorigin.analytics"):
            events = [beacon(position=n) for n in range(25)]
            reply = post(origin, media_id, {"events": events})
            assert (reply.status, reply.json()) == (202, {"accepted": 25})
            stats = stats_of(origin)
            assert (stats["dropped"], stats["buffered"], stats["sent"]) == (15, 10, 0)
            assert "15 dropped in all" in caplog.text
    finally:
        origin.stop()


def test_origin_events_are_written_as_event_json() -> None:
    """The hot path queues a tuple; the sender must write exactly what an Event would."""
    records: list[Served] = [
        ("segment", "kq3P9xVb2mZa", 1767225600.125, "s1", "ada", "v0", 2_500_000, 200, "GB",
         "mobile"),
        ("manifest", "live_x-Y_z", 1767225600.0, "", "", None, 0, 304, None, "other"),
        ("segment", "m", 1e9 + 1 / 3, 'quo"te\\back\nline', "ünï\u2028", "a0", 100, 206, None,
         "desktop"),
    ]
    for record in records:
        kind, media, ts, session, user, rendition, nbytes, status, country, device = record
        event_id = new_event_id()
        event = Event(kind, media, ts, session, user, rendition=rendition, bytes=nbytes,
                      status=status, country=country, device=device, id=event_id)
        assert served_json(record, event_id) == event.to_json()
        assert Event.from_json(served_json(record, event_id)) == event


# -- the emitter alone ----------------------------------------------------------------------------

async def test_batches_keep_order_and_a_failed_batch_is_retried_whole(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.set(STREAM, "not a stream")  # every XADD fails inside EXEC (WRONGTYPE)
    emitter = EventEmitter(redis_url, batch=100)
    await emitter.start()
    try:
        sent = [Event("heartbeat", "m1", 1.0, session="s", position=float(n))
                for n in range(1234)]
        for e in sent:
            emitter.emit(e)
        while emitter.stats()["redis_errors"] < 2:
            await asyncio.sleep(0.01)
        assert emitter.stats()["sent"] == 0 and emitter.stats()["buffered"] == 1234
        await client.delete(STREAM)
        while emitter.stats()["buffered"]:
            await asyncio.sleep(0.01)
        assert emitter.stats()["sent"] == 1234 and emitter.stats()["dropped"] == 0
        got = [json.loads(f[b"event"])["id"] for _, f in await client.xrange(STREAM)]
        assert got == [e.id for e in sent]
    finally:
        await emitter.stop()
        await client.aclose()


async def test_stop_drains_and_counts_what_it_cannot_send(redis_url: str,
                                                          tmp_path: Path) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    emitter = EventEmitter(redis_url)
    await emitter.start()
    for n in range(3000):
        emitter.emit(Event("heartbeat", "m1", 1.0, position=float(n)))
    await emitter.stop()
    assert await client.xlen(STREAM) == 3000 and emitter.stats()["sent"] == 3000
    emitter.emit(Event("play", "m1", 1.0))  # after stop: counted, not kept
    assert emitter.stats()["dropped"] == 1
    await client.aclose()
    nowhere = EventEmitter(RedisServer(tmp_path).url)  # nothing listens there
    await nowhere.start()
    for _ in range(5):
        nowhere.emit(Event("play", "m1", 1.0))
    started = time.monotonic()
    await nowhere.stop()
    assert time.monotonic() - started < 3
    assert nowhere.stats()["dropped"] == 5 and nowhere.stats()["buffered"] == 0


async def test_maxlen_trims_the_stream(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    emitter = EventEmitter(redis_url, maxlen=100)
    await emitter.start()
    for _ in range(1000):
        emitter.emit(Event("play", "m1", 1.0))
    await emitter.stop()
    length = await client.xlen(STREAM)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): at least 100 stay.
    assert 100 <= length < 300, length
    info = await client.xinfo_stream(STREAM)
    assert info["entries-added"] == 1000
    await client.aclose()
