"""Prometheus `/metrics`: requests, bytes and latency by route, segment cache hits, live ingest,
the job queue and the analytics buffer.

Each application has a registry of its own (tests run many apps in one process). Request
metrics are labelled by the route's template (`/vod/{media_id}/{rid}/{name}`), never by the
concrete path, so label cardinality stays bounded. Gauges that need a lookup (queue depth, live
channels, caches) are filled at scrape time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Latency buckets for an origin: cached answers take a millisecond, blocking reloads seconds.
# A handler serving several kinds of URL from one route names the kind here (a template).
ROUTE_LABEL = "mediaorigin.route_label"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OriginMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("mediaorigin_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.bytes = Counter("mediaorigin_http_response_bytes", "Response body bytes sent",
                             ["route"], registry=r)
        self.latency = Histogram("mediaorigin_http_request_duration_seconds",
                                 "Time to answer (for streamed bodies: until headers)",
                                 ["route"], buckets=BUCKETS, registry=r)
        self.cache = Gauge("mediaorigin_segment_cache_lookups",
                           "Segment cache lookups since start, by outcome", ["outcome"],
                           registry=r)
        self.live_bitrate = Gauge("mediaorigin_live_ingest_bitrate_bits_per_second",
                                  "Incoming bitrate of each live stream", ["live_id"],
                                  registry=r)
        self.live_viewers = Gauge("mediaorigin_live_viewers", "Viewers of each live stream",
                                  ["live_id"], registry=r)
        self.live_streams = Gauge("mediaorigin_live_streams", "Live channels in this process",
                                  ["state"], registry=r)
        self.queue = Gauge("mediaorigin_jobs_queued", "Processing jobs waiting", registry=r)
        self.running = Gauge("mediaorigin_jobs_running", "Processing jobs running", registry=r)
        self.events = Gauge("mediaorigin_analytics_events", "Analytics events since start",
                            ["state"], registry=r)
        # Labelled children looked up once: `labels()` costs more than the update itself, and
        # this runs on every request (routes and statuses are few).
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[str, tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float,
                size: int | None) -> None:
        counter = self._counted.get((route, method, status))
        if counter is None:
            counter = self._counted[(route, method, status)] = \
                self.requests.labels(route, method, str(status))
        counter.inc()
        timed = self._timed.get(route)
        if timed is None:
            timed = self._timed[route] = (self.latency.labels(route), self.bytes.labels(route))
        timed[0].observe(seconds)
        if size:
            timed[1].inc(size)

    def record(self, request: web.Request, status: int, seconds: float,
               response: web.StreamResponse | None) -> None:
        """One answered request (called by the edge middleware)."""
        size = None
        if response is not None:
            size = response.body_length if response.prepared else response.content_length
        self.observe(_route(request), request.method, status, seconds, size)


def _route(request: web.Request) -> str:
    label = request.get(ROUTE_LABEL)
    if label is not None:
        return label
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    if resource is None:
        return "unmatched"
    return resource.canonical


def metrics_handler(metrics: OriginMetrics, token: str,
                    refresh: Callable[[OriginMetrics], Awaitable[None]]) -> Handler:
    """GET /metrics; with a token configured, only for `Authorization: Bearer <token>`."""

    async def handle(request: web.Request) -> web.Response:
        if token:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return web.json_response(
                    {"error": {"code": "unauthorized", "message": "metrics need the token"}},
                    status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        await refresh(metrics)
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST,
                                     "Cache-Control": "no-store"})

    return handle
