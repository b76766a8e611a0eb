"""Prometheus /metrics from a running origin: request counts, bytes and latency by route
template, segment cache outcomes, live ingest, the job queue; parsed with prometheus_client's
own parser, checked to the exact count."""

from __future__ import annotations

import re
from pathlib import Path

from library_fixtures import auth, library_config
from media import av_faststart
from origin_server import OriginThread
from prometheus_client.parser import text_string_to_metric_families
from test_live_rtmp import clip, create, publish, state, wait_until  # noqa: F401 (fixture)

from mediaorigin.origin.metrics import RequestStats


def scrape(origin: OriginThread, headers: dict[str, str] | None = None) -> dict:
    r = origin.get("/metrics", headers)
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_and_cache_metrics(tmp_path: Path) -> None:
    origin = OriginThread(library_config(tmp_path)).start()
    try:
        media_id = origin.add([av_faststart(tmp_path)])
        segment = f"/vod/{media_id}/v0/seg-1.m4s"
        bodies = [origin.get(segment).body for _ in range(3)]
        sealed = origin.get(segment + "?drm=aes-128").body  # (a memoryview body)
        assert len(sealed) > len(bodies[0])
        assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200
        assert origin.get("/vod/nope0000/master.m3u8").status == 404
        m = scrape(origin)
        route = "/vod/{media_id}/{rid}/{name}"
        assert value(m, "mediaorigin_http_requests_total", route=route, method="GET",
                     status="200") == 4
        assert value(m, "mediaorigin_http_response_bytes_total", route=route) == \
            sum(len(b) for b in bodies) + len(sealed)
        assert value(m, "mediaorigin_http_request_duration_seconds_count", route=route) == 4
        buckets = [value(m, "mediaorigin_http_request_duration_seconds_bucket", route=route,
                         le=le) for le in ("0.001", "0.25", "10.0", "+Inf")]
        assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative
        assert 0 < value(m, "mediaorigin_http_request_duration_seconds_sum", route=route) < 10
        entry = "/vod/{media_id}/{name}"
        assert value(m, "mediaorigin_http_requests_total", route=entry, method="GET",
                     status="200") == 1
        assert value(m, "mediaorigin_http_requests_total", route=entry, method="GET",
                     status="404") == 1
        # The first request packaged the segment (a miss), the two others were served from
        # memory; the encrypted one is a segment of its own (a miss).
        assert value(m, "mediaorigin_segment_cache_lookups", outcome="memory") == 2
        assert value(m, "mediaorigin_segment_cache_lookups", outcome="miss") == 2
        assert value(m, "mediaorigin_jobs_queued") == 0
        # Unknown paths are one label, not one per path.
        origin.get("/no/such/thing/1")
        origin.get("/no/such/thing/2")
        m = scrape(origin)
        assert value(m, "mediaorigin_http_requests_total", route="unmatched", method="GET",
                     status="404") == 2
    finally:
        origin.stop()


def test_live_ingest_metrics_and_token(tmp_path: Path, clip: Path) -> None:  # noqa: F811
    origin = OriginThread(library_config(
        tmp_path, server={"metrics_token": "scrape-me"},
        live={"reconnect_grace": 30.0})).start()
    try:
        assert origin.get("/metrics").status == 401
        assert origin.get("/metrics", {"Authorization": "Bearer wrong"}).status == 401
        stream = create(origin)
        live_id = stream["id"]
        p = publish(stream, clip)
        try:
            wait_until(lambda: state(origin, live_id)["state"] == "live"
                       and state(origin, live_id)["ingest"]["bitrate"] > 0)
            m = scrape(origin, {"Authorization": "Bearer scrape-me"})
            assert value(m, "mediaorigin_live_streams", state="live") == 1
            assert value(m, "mediaorigin_live_ingest_bitrate_bits_per_second",
                         live_id=live_id) > 50_000
            # Live playback is one route; metrics still tell its kinds of URL apart.
            wait_until(lambda: origin.get(f"/live/{live_id}/master.m3u8").status == 200)
            playlist = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
            uri = re.findall(r"^([0-9]+\.m4s)$", playlist, re.M)[0]
            init = re.search(r'EXT-X-MAP:URI="([^"?]+)', playlist)[1]
            base = f"/live/{live_id}/video/"
            assert [origin.get(base + name).status for name in (uri, init, "index.m3u8")] \
                == [200, 200, 200]
            bad = [origin.get(f"/live/{live_id}/{path}") for path in
                   ("video/notes.txt", "video/init-x.mp4", "ts/init-0.mp4", "3.m4s")]
            assert [(r.status, r.json()["error"]["code"]) for r in bad] == \
                [(404, "not_found")] * 4
            m = scrape(origin, {"Authorization": "Bearer scrape-me"})
            requests = {route: value(m, "mediaorigin_http_requests_total", route=route,
                                     method="GET", status="200") for route in (
                "/live/{live_id}/{name}", "/live/{live_id}/{rendition}/index.m3u8",
                "/live/{live_id}/{rendition}/init-{epoch}.mp4",
                "/live/{live_id}/{rendition}/{file}")}
            assert requests["/live/{live_id}/{rendition}/index.m3u8"] == 2
            assert requests["/live/{live_id}/{rendition}/init-{epoch}.mp4"] == 1
            assert requests["/live/{live_id}/{rendition}/{file}"] == 1
            assert requests["/live/{live_id}/{name}"] >= 1  # (polled until ready)
        finally:
            p.kill()
            p.wait()
        origin.request("DELETE", f"/api/live/{live_id}", None, auth())
        m = scrape(origin, {"Authorization": "Bearer scrape-me"})
        assert value(m, "mediaorigin_live_streams", state="ended") == 1
        assert (("mediaorigin_live_ingest_bitrate_bits_per_second",
                 (("live_id", live_id),)) not in m)
    finally:
        origin.stop()


def test_latency_buckets_are_inclusive_and_cumulative() -> None:
    stats = RequestStats()
    for seconds in (0.001, 0.0011, 0.0011, 20.0):
        stats.add("/r", "GET", 200, seconds, 10)
    stats.add("/r", "HEAD", 304, 0.0, None)
    families = {f.name: f for f in stats.collect()}
    buckets = {s.labels["le"]: s.value for s in families[
        "mediaorigin_http_request_duration_seconds"].samples if s.name.endswith("_bucket")}
    assert (buckets["0.001"], buckets["0.0025"], buckets["10.0"], buckets["+Inf"]) == \
        (2, 4, 4, 5)
    answered = {(s.labels["method"], s.labels["status"]): s.value
                for s in families["mediaorigin_http_requests"].samples}
    assert answered == {("GET", "200"): 4, ("HEAD", "304"): 1}
    assert [s.value for s in families["mediaorigin_http_response_bytes"].samples] == [40]
