"""Command line: `mediaorigin serve`, `mediaorigin import`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .config import Config, ConfigError
from .library.catalog import Caption, Catalog, MediaItem
from .packaging.model import MediaError
from .packaging.mp4.index import index_file
from .packaging.webvtt import parse_webvtt
from .storage.local import LocalStorage

log = logging.getLogger("mediaorigin")
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ImportFailed(Exception):
    """A file that cannot become a media item; the message says why."""


def import_media(config: Config, files: Sequence[Path], title: str | None,
                 captions: Sequence[tuple[str, Path]] = ()) -> MediaItem:
    """Validate files (index them), copy them into storage and register one media item."""
    if not files:
        raise ImportFailed("no files given")
    for path in files:
        if not path.is_file():
            raise ImportFailed(f"{path}: not a file")
        try:
            with open(path, "rb") as f:
                index = index_file(lambda off, n, f=f: os.pread(f.fileno(), n, off),
                                   os.fstat(f.fileno()).st_size)
        except MediaError as e:
            raise ImportFailed(f"{path}: {e}") from None
        if not index.tracks:
            raise ImportFailed(f"{path}: no audio or video track")
    for language, path in captions:
        if not LANGUAGE.match(language):
            raise ImportFailed(
                f"captions language {language!r} is not a BCP 47 tag like en or pt-BR")
        try:
            parse_webvtt(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, MediaError) as e:
            raise ImportFailed(f"{path}: {e}") from None
    storage = LocalStorage(config.path(config.storage.root))
    catalog = Catalog(config.path(config.library.database))
    try:
        media_id = Catalog.new_id()
        keys = []
        for n, path in enumerate(files):
            key = f"media/{media_id}/{n}{path.suffix.lower() or '.mp4'}"
            storage.put_file(key, path)
            keys.append(key)
        caption_records = []
        for n, (language, path) in enumerate(captions):
            key = f"media/{media_id}/captions-{n}.vtt"
            storage.put_file(key, path)
            caption_records.append(Caption(language, key))
        item = MediaItem(media_id, title or files[0].stem, tuple(keys), tuple(caption_records))
        catalog.add(item)
        return item
    finally:
        catalog.close()


def ensure_demo(config: Config) -> None:
    """Generate and register the demo lecture once."""
    from . import demo

    catalog = Catalog(config.path(config.library.database))
    try:
        if catalog.find_by_title(demo.TITLE) is not None:
            return
    finally:
        catalog.close()
    log.info("generating the demo lecture (%.0f s), once", config.demo.duration)
    with tempfile.TemporaryDirectory(dir=config.path(config.storage.cache_dir).parent) as tmp:
        files, captions = demo.generate(Path(tmp), config.demo.duration)
        item = import_media(config, files, demo.TITLE, [("en", captions)])
    log.info("demo lecture ready: /vod/%s/master.m3u8", item.id)


async def _serve_forever(config: Config) -> None:
    from aiohttp import web

    from .app import create_app

    runner = web.AppRunner(create_app(config), access_log=log if config.server.access_log
                           else None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port,
                       reuse_port=config.server.workers > 1, backlog=1024)
    await site.start()
    log.info("origin %d listening on http://%s:%d", os.getpid(), config.server.host,
             config.server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def serve_one(config: Config) -> None:
    factory = None
    if config.server.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_forever(config))


def serve(config: Config) -> None:
    config.path(config.storage.cache_dir).mkdir(parents=True, exist_ok=True)
    if config.demo.enabled:
        ensure_demo(config)
    if config.server.workers == 1:
        serve_one(config)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config,), daemon=True)
             for _ in range(config.server.workers)]
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
    p_import = sub.add_parser("import", help="register local files as one media item")
    p_import.add_argument("files", nargs="+", type=Path)
    p_import.add_argument("--title")
    p_import.add_argument("--captions", action="append", type=_caption_arg, default=[],
                          metavar="LANG=FILE.vtt")
    p_import.add_argument("--config", type=Path)
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
    try:
        item = import_media(config, args.files, args.title, args.captions)
    except ImportFailed as e:
        print(f"mediaorigin: {e}", file=sys.stderr)
        return 1
    print(item.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
