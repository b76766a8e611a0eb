"""Build the aiohttp application from a Config: wires the library, caches, origin and API."""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from .analytics.emitter import EMITTER, emitter_from_config
from .analytics.runtime import start_analytics
from .api import context as api_context
from .api import live as api_live
from .api.app import create_api
from .api.playback import jwks_document
from .auth.apikeys import bootstrap_secret
from .auth.concurrency import StreamSlots
from .auth.keystore import SealedKeyStore, parse_master_key
from .auth.playback_guard import PlaybackGuard
from .auth.viewers import ViewerSlots
from .config import Config
from .ingest.rtmp.server import RtmpServer
from .ingest.whip import WhipEndpoint
from .ingest.whip_http import add_whip_routes
from .library.importer import register_ladder
from .library.repository import MediaQuery
from .library.runtime import LibraryRuntime, start_library
from .live.hub import LiveHub
from .live.repository import LiveRepository
from .origin.assets import ASSET_LIBRARY, ASSET_STORAGE, add_asset_routes
from .origin.cache import IndexCache, SegmentCache
from .origin.edge import edge
from .origin.http import json_error
from .origin.live_proxy import LiveProxy, trust_peer_on
from .origin.live_routes import LIVE_HUB, add_live_routes
from .origin.metrics import OriginMetrics, metrics_handler
from .origin.playback import Playback
from .origin.routes import GUARD, PLAYBACK, VIEWERS, add_routes
from .origin.served import SERVER_EVENTS
from .storage.local import LocalStorage

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
RUNTIME = web.AppKey("library_runtime", LibraryRuntime)
WHIP = web.AppKey("whip_endpoint", WhipEndpoint)
RTMP = web.AppKey("rtmp_server", RtmpServer)
# Where scripts/install-deps.sh puts hls.js (npm), for the demo page.
HLS_JS = (Path(__file__).resolve().parent.parent
          / "tests/players/node_modules/hls.js/dist/hls.min.js")


def create_app(config: Config) -> web.Application:
    metrics = OriginMetrics()
    middlewares = [edge(metrics, config.server.cors_origins)]
    live_socket = config.server.live_socket  # set when several workers share the port
    proxy = None
    if live_socket and config.ingest.rtmp_enabled:
        middlewares.append(trust_peer_on(live_socket))
    elif live_socket:
        proxy = LiveProxy(live_socket)
        middlewares.append(proxy.middleware())
    app = web.Application(middlewares=middlewares)
    if proxy is not None:
        app.on_cleanup.append(lambda _: proxy.close())
    app[CONFIG] = config
    app[api_context.SHUTTING_DOWN] = asyncio.Event()
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_shutting_down)
    add_routes(app)
    add_asset_routes(app)
    add_live_routes(app)
    add_whip_routes(app, WHIP)
    app.add_subapp("/api/", create_api(config))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(metrics, config.server.metrics_token,
                                                   lambda m: _refresh_metrics(app, m)))
    app.router.add_get("/.well-known/jwks.json", jwks_document)
    app.router.add_get("/", index_page)
    app.router.add_get("/player/hls.min.js", player_script)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    storage = LocalStorage(config.path(config.storage.root))
    cache_dir = config.path(config.storage.cache_dir)
    pk = config.packaging
    runtime = await start_library(
        config, consume=config.jobs.backend == "inprocess" or config.jobs.run_in_server)
    playback = Playback(
        runtime.library.playable, storage,
        IndexCache(storage, cache_dir, pk.index_memory_entries),
        SegmentCache(cache_dir, pk.segment_memory_mb * 1024 * 1024,
                     pk.segment_disk_mb * 1024 * 1024),
        pk.target_duration,
        keys=SealedKeyStore(runtime.library.engine, parse_master_key(bootstrap_secret(
            config.auth.master_key, config.path(config.auth.master_key_file),
            lambda: base64.b64encode(os.urandom(32)).decode()))),
        key_rotation=config.auth.key_rotation,
    )
    runtime.service.forget = playback.forget  # deleted media leave the caches at once
    runtime.notifier.on_published.append(playback.revalidate)
    guard = PlaybackGuard.from_config(config)
    app[GUARD] = guard
    emitter = emitter_from_config(config)  # analytics events to Redis, off the response path
    await emitter.start()
    app[EMITTER] = emitter
    if config.analytics.enabled and config.analytics.server_events:
        app[SERVER_EVENTS] = emitter
    redis = None
    if config.auth.max_streams_per_user > 0:
        redis = aioredis.from_url(config.redis.url, socket_timeout=1.0,
                                  socket_connect_timeout=1.0)
        app[VIEWERS] = ViewerSlots(StreamSlots(redis, config.auth.max_streams_per_user,
                                               config.auth.stream_ttl))
    else:
        app[VIEWERS] = ViewerSlots(None)
    app[RUNTIME] = runtime
    app[ASSET_LIBRARY] = runtime.library
    app[ASSET_STORAGE] = storage
    app[PLAYBACK] = playback
    app[api_context.LIBRARY] = runtime.library
    app[api_context.SERVICE] = runtime.service
    app[api_context.NOTIFIER] = runtime.notifier
    # The stream's aggregator (retries in the background while Redis is away) and reader.
    analytics = await start_analytics(config, runtime.library, read=True,
                                      aggregate=config.analytics.aggregate_in_server)
    if analytics.reader is not None:
        app[api_context.ANALYTICS] = analytics.reader
    stop_live = await _start_live(app, config, runtime, storage)
    yield
    await stop_live()
    await emitter.stop()
    await analytics.stop()
    await runtime.stop()
    playback.close()
    guard.close()
    if redis is not None:
        await redis.aclose()


async def _start_live(app: web.Application, config: Config, runtime: LibraryRuntime,
                      storage: LocalStorage) -> Callable[[], Awaitable[None]]:
    """The live hub, WHIP and (in the ingesting process) the RTMP server; returns their stop."""
    hub = _live_hub(config, runtime, storage)
    app[LIVE_HUB] = hub
    app[api_live.LIVE_REPO] = hub.repo
    app[api_live.RTMP_PORT] = config.ingest.rtmp_port
    if config.ingest.rtmp_enabled:  # the ingesting process owns live streams
        await hub.recover()
    whip = WhipEndpoint(hub, [h.strip() for h in config.ingest.webrtc_hosts.split(",")
                              if h.strip()], config.ingest.webrtc_keyframe_interval)
    app[WHIP] = whip
    rtmp = None
    if config.ingest.rtmp_enabled:
        rtmp = RtmpServer(hub, config.ingest.rtmp_host, config.ingest.rtmp_port,
                          config.ingest.rtmp_timeout)
        await rtmp.start()
        app[RTMP] = rtmp
        app[api_live.RTMP_PORT] = rtmp.port

    async def stop() -> None:
        if rtmp is not None:
            await rtmp.stop()
        await whip.close_all()
        await hub.close()  # live streams end cleanly: recordings made, nothing lost

    return stop


def _live_hub(config: Config, runtime: LibraryRuntime, storage: LocalStorage) -> LiveHub:
    live = config.live

    async def register(title: str, path: Path) -> str:
        return await register_ladder(runtime.library, storage, [path], title)

    return LiveHub(
        LiveRepository(runtime.library.engine), config.path(live.dir),
        target=live.target_duration, part_target=live.part_target, window=live.window,
        memory_segments=live.memory_segments, reconnect_grace=live.reconnect_grace,
        blocking_timeout=live.blocking_timeout, register_recording=register,
        emit=runtime.notifier.emit)


async def _shutting_down(app: web.Application) -> None:
    """Long-lived responses (progress event streams) end now rather than at the timeout."""
    app[api_context.SHUTTING_DOWN].set()


async def _refresh_metrics(app: web.Application, m: OriginMetrics) -> None:
    """Scrape-time gauges: caches, live channels, the analytics buffer, the job queue."""
    segments = app[PLAYBACK].segments
    m.cache.labels("memory").set(segments.hits_memory)
    m.cache.labels("disk").set(segments.hits_disk)
    m.cache.labels("miss").set(segments.misses)
    m.live_bitrate.clear()
    m.live_viewers.clear()
    states: dict[str, int] = {"live": 0, "reconnecting": 0, "ended": 0, "idle": 0}
    for live_id, channel in app[LIVE_HUB].channels.items():
        states[channel.state] = states.get(channel.state, 0) + 1
        if channel.state in ("live", "reconnecting"):
            m.live_bitrate.labels(live_id).set(channel.stats.report()["bitrate"])
            m.live_viewers.labels(live_id).set(channel.viewers())
    for state, n in states.items():
        m.live_streams.labels(state).set(n)
    for key, value in app[EMITTER].stats().items():
        if key in ("sent", "buffered", "dropped"):
            m.events.labels(key).set(value)
    counts = await app[RUNTIME].library.job_counts()
    m.queue.set(counts.get("queued", 0))
    m.running.set(counts.get("running", 0))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index_page(request: web.Request) -> web.Response:
    """The demo page: every media item and live lecture, playable with hls.js."""
    items, _ = await request.app[RUNTIME].library.list_media(MediaQuery(status="ready",
                                                                        limit=50))
    items = [i for i in items if i.type in ("video", "audio") and i.generation is not None]
    entries = "\n".join(
        f'<li><a href="#" data-id="{html.escape(i.id)}">{html.escape(i.title)}</a> '
        f'<code>/vod/{html.escape(i.id)}/master.m3u8</code></li>' for i in items)
    live = await request.app[LIVE_HUB].repo.list(None, all_organizations=True, state="live",
                                                 limit=20)
    # Lectures live now come first (the page plays the first entry).
    entries = "".join(
        f'<li><a href="#" data-id="{html.escape(s.id)}" data-live="1">{html.escape(s.title)}'
        f'</a> (live) <code>/live/{html.escape(s.id)}/master.m3u8</code></li>\n'
        for s in live) + entries
    page = resources.files("mediaorigin").joinpath("web/index.html").read_text(encoding="utf-8")
    return web.Response(text=page.replace("<!--MEDIA-->", entries), content_type="text/html")


async def player_script(request: web.Request) -> web.StreamResponse:
    if HLS_JS.is_file():
        return web.FileResponse(HLS_JS)
    return json_error(404, "not_found", "hls.js is not installed (run scripts/install-deps.sh)")
