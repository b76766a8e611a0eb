"""A real origin on 127.0.0.1 for tests: the app from create_app, on its own thread and loop,
so blocking clients (the ffmpeg CLI, http.client) and async ones (playwright) can use it."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from mediaorigin.app import create_app
from mediaorigin.cli import import_media
from mediaorigin.config import Config


def make_config(root: Path, **sections: dict[str, object]) -> Config:
    # Tests never take the standard RTMP port: each origin listens on a free one. Nor the
    # machine's Redis: analytics are off unless a test turns them on with its private one.
    env = {"MEDIAORIGIN_DEMO_ENABLED": "false", "MEDIAORIGIN_INGEST_RTMP_PORT": "0",
           "MEDIAORIGIN_ANALYTICS_ENABLED": "false"}
    for section, values in sections.items():
        for key, value in values.items():
            env[f"MEDIAORIGIN_{section.upper()}_{key.upper()}"] = str(value)
    config = Config.load(None, env=env)
    config.base_dir = root
    return config


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        import json

        return json.loads(self.body)


@dataclass
class OriginThread:
    config: Config
    base: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> OriginThread:
        self._thread = threading.Thread(target=self._main, daemon=True, name="origin")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("origin did not start")
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.config), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def add(self, files: Sequence[Path], title: str | None = None,
            captions: Sequence[tuple[str, Path]] = ()) -> str:
        # On a thread of its own: import_media runs its own event loop, and async tests call
        # this from inside theirs.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(import_media, self.config, list(files), title,
                               list(captions)).result()

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> Reply:
        return request(self.url(path), headers, method)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        return request(self.url(path), headers, method, body)


def request(url: str, headers: dict[str, str] | None = None, method: str = "GET",
            body: bytes | None = None) -> Reply:
    """One HTTP request with http.client (the path is sent as given: no normalisation)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()
