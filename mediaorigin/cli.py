"""Command line: `mediaorigin serve | worker | import | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from .auth.apikeys import bootstrap_admin_key
from .config import Config, ConfigError
from .library.bulk import bulk_import
from .library.db import migrate, open_database
from .library.importer import ImportFailed, register_ladder
from .library.repository import Library
from .storage.local import LocalStorage
from .tuning import freeze_startup_objects, keep_freed_memory

log = logging.getLogger("mediaorigin")


def import_media(config: Config, files: Sequence[Path], title: str | None,
                 captions: Sequence[tuple[str, Path]] = ()) -> str:
    """Register ready-made renditions (and captions) as one media item; returns its id."""
    return asyncio.run(_register(config, files, title, captions))


@contextlib.asynccontextmanager
async def _library(config: Config) -> AsyncIterator[Library]:
    library = Library(await open_database(config.library.url, config.base_dir,
                                          config.library.auto_migrate))
    try:
        yield library
    finally:
        await library.close()


async def _register(config: Config, files: Sequence[Path], title: str | None,
                    captions: Sequence[tuple[str, Path]]) -> str:
    async with _library(config) as library:
        return await register_ladder(library, LocalStorage(config.path(config.storage.root)),
                                     files, title, captions)


def ensure_demo(config: Config) -> None:
    """Generate and register the demo lecture once."""
    from . import demo

    if asyncio.run(_find_title(config, demo.TITLE)) is not None:
        return
    log.info("generating the demo lecture (%.0f s), once", config.demo.duration)
    with tempfile.TemporaryDirectory(dir=config.path(config.storage.cache_dir).parent) as tmp:
        files, captions = demo.generate(Path(tmp), config.demo.duration)
        media_id = import_media(config, files, demo.TITLE, [("en", captions)])
    log.info("demo lecture ready: /vod/%s/master.m3u8", media_id)


async def _find_title(config: Config, title: str) -> str | None:
    async with _library(config) as library:
        return await library.find_by_title(title)


async def _serve_forever(config: Config) -> None:
    from aiohttp import web

    from .app import create_app

    runner = web.AppRunner(create_app(config), access_log=log if config.server.access_log
                           else None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port,
                       reuse_port=config.server.workers > 1, backlog=1024)
    await site.start()
    live_socket = config.server.live_socket
    if live_socket and config.ingest.rtmp_enabled:  # the worker that owns live streams
        with contextlib.suppress(FileNotFoundError):
            os.unlink(live_socket)
        await web.UnixSite(runner, live_socket).start()
        os.chmod(live_socket, 0o600)  # the other workers (same user) only
    freeze_startup_objects()
    log.info("origin %d listening on http://%s:%d", os.getpid(), config.server.host,
             config.server.port)
    await _until_stopped()
    await runner.cleanup()


async def _until_stopped() -> None:
    """Return at SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def serve_one(config: Config) -> None:
    keep_freed_memory(config.server.keep_freed_memory_mb)
    factory = None
    if config.server.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_forever(config))


def serve(config: Config) -> None:
    config.path(config.storage.cache_dir).mkdir(parents=True, exist_ok=True)
    # Once, before any worker starts: the schema and the bootstrap admin key.
    if config.library.auto_migrate:
        asyncio.run(_migrate(config))
    key_file = config.path(config.auth.admin_key_file)
    bootstrap_admin_key(config.auth.admin_key, key_file)
    if not config.auth.admin_key:
        log.info("admin API key: in %s", key_file)
    if config.demo.enabled:
        ensure_demo(config)
    if config.server.workers == 1:
        serve_one(config)
        return
    if config.ingest.rtmp_enabled:
        # Live streams live in the first worker; the others forward /live and /api/live to
        # it over this socket (origin/live_proxy.py).
        config = copy.deepcopy(config)
        socket_path = config.path(config.storage.cache_dir) / f"live-{os.getpid()}.sock"
        if len(str(socket_path)) > 100:  # sun_path holds 108 bytes
            socket_path = Path(tempfile.gettempdir()) / f"mediaorigin-live-{os.getpid()}.sock"
        config.server.live_socket = str(socket_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config if n == 0 else _without_ingest(config),),
                         daemon=True)
             for n in range(config.server.workers)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
    if config.server.live_socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.server.live_socket)


def _without_ingest(config: Config) -> Config:
    """Live channels live in the process that ingests them: only the first worker does."""
    other = copy.deepcopy(config)
    other.ingest.rtmp_enabled = False
    return other


def _worker(config: Config) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve_one(config)


def _caption_arg(value: str) -> tuple[str, Path]:
    language, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError("expected LANG=FILE.vtt")
    return language, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaorigin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the origin")
    p_serve.add_argument("--config", type=Path, help="config.toml (default: none, built-ins)")
    p_worker = sub.add_parser("worker", help="work on processing jobs from the Redis queue "
                              "and aggregate playback analytics")
    p_worker.add_argument("--config", type=Path)
    p_import = sub.add_parser(
        "import", help="bulk-import files or folders of lectures (each file a media item, "
        "processed like an upload); with --ladder, register files as one ready item")
    p_import.add_argument("files", nargs="+", type=Path)
    p_import.add_argument("--title", help="title (one file, or --ladder)")
    p_import.add_argument("--ladder", action="store_true",
                          help="the files are renditions of one item (H.264/AAC MP4): publish "
                          "them as they are, without processing")
    p_import.add_argument("--captions", action="append", type=_caption_arg, default=[],
                          metavar="LANG=FILE.vtt", help="with --ladder: WebVTT captions")
    p_import.add_argument("--no-wait", action="store_true",
                          help="queue the jobs and return (workers process them)")
    p_import.add_argument("--config", type=Path)
    p_token = sub.add_parser("token", help="print a management API token (--role) or a "
                             "playback token (--media)")
    p_token.add_argument("--role", choices=("admin", "instructor", "student"))
    p_token.add_argument("--org", help="organization (API tokens)")
    p_token.add_argument("--media", help="media id (playback tokens)")
    p_token.add_argument("--subject", "--user", dest="subject", default="cli",
                         help="who the token is for")
    p_token.add_argument("--ttl", type=int, default=3600, help="seconds")
    p_token.add_argument("--config", type=Path)
    p_migrate = sub.add_parser("migrate", help="bring the library database schema up to date")
    p_migrate.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = Config.load(args.config)
    except ConfigError as e:
        print(f"mediaorigin: {e}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(config)
        return 0
    if args.command == "worker":
        return worker(config)
    if args.command == "migrate":
        asyncio.run(_migrate(config))
        return 0
    if args.command == "token":
        return print_token(config, args)
    try:
        if args.ladder:
            print(import_media(config, args.files, args.title, args.captions))
            return 0
        if args.captions:
            raise ImportFailed("--captions goes with --ladder")
        return asyncio.run(bulk_import(config, args.files, args.title, wait=not args.no_wait))
    except ImportFailed as e:
        print(f"mediaorigin: {e}", file=sys.stderr)
        return 1


def print_token(config: Config, args: argparse.Namespace) -> int:
    """`mediaorigin token`: an API token for a role, or a playback token for a media item,
    signed with the configured token keys (made once if none are configured)."""
    import time

    from .auth.api_tokens import issue_api_token
    from .auth.playback_guard import PlaybackGuard

    if (args.role is None) == (args.media is None):
        print("mediaorigin: give --role (API token) or --media (playback token)",
              file=sys.stderr)
        return 2
    guard = PlaybackGuard.from_config(config)
    try:
        if args.role:
            print(issue_api_token(guard.keyring, subject=args.subject, role=args.role,
                                  organization=args.org, ttl=args.ttl, now=time.time()))
        else:
            print(guard.keyring.issue(now=time.time(), media=args.media, ttl=args.ttl,
                                      user=args.subject))
    except ValueError as e:
        print(f"mediaorigin: {e}", file=sys.stderr)
        return 2
    finally:
        guard.close()
    return 0


async def _migrate(config: Config) -> None:
    engine = await open_database(config.library.url, config.base_dir, auto_migrate=False)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def worker(config: Config) -> int:
    """`mediaorigin worker`: run processing jobs from the Redis Streams group (jobs.backend
    "redis") and aggregate the analytics stream ([analytics] enabled) until stopped."""
    if config.jobs.backend != "redis" and not config.analytics.enabled:
        print("mediaorigin: worker needs jobs.backend = \"redis\" or [analytics] enabled "
              "(in-process jobs run inside serve)", file=sys.stderr)
        return 2
    asyncio.run(_work(config))
    return 0


async def _work(config: Config) -> None:
    from .analytics.runtime import start_analytics
    from .library.runtime import start_library

    jobs = config.jobs.backend == "redis"
    runtime = await start_library(config, consume=jobs)
    analytics = await start_analytics(config, runtime.library, aggregate=True, read=False)
    if jobs:
        log.info("worker %d: processing jobs (%d at a time)", os.getpid(),
                 config.jobs.concurrency)
    if analytics.aggregator is not None:
        log.info("worker %d: aggregating analytics events", os.getpid())
    await _until_stopped()
    await analytics.stop()
    await runtime.stop()


if __name__ == "__main__":
    sys.exit(main())
