"""LiveProxy (origin/live_proxy.py) against a real aiohttp server on a Unix socket: requests
wait for the first worker to start listening, get 502 when it never does, and the peer
header is believed only on that socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from mediaorigin.origin import live_proxy
from mediaorigin.origin.edge import edge
from mediaorigin.origin.live_proxy import PEER_HEADER, LiveProxy, trust_peer_on
from mediaorigin.origin.metrics import OriginMetrics


async def owner_app(socket_path: str) -> web.AppRunner:
    """A stand-in for the first worker: echoes the peer it believes in."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"peer": request.remote, "path": request.path_qs},
                                 headers={"Cache-Control": "no-cache"})

    app = web.Application(middlewares=[trust_peer_on(socket_path)])
    app.router.add_get("/live/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, socket_path).start()
    return runner


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def forwarding_app(socket_path: str) -> web.Application:
    proxy = LiveProxy(socket_path)
    # as create_app orders them
    app = web.Application(middlewares=[edge(OriginMetrics(), ""), proxy.middleware()])
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(lambda _: proxy.close())
    return app


async def test_requests_wait_for_the_owner_to_start(aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    socket_path = str(tmp_path / "live.sock")
    client = await aiohttp_client(forwarding_app(socket_path))
    pending = asyncio.ensure_future(client.get("/live/x/master.m3u8?token=t",
                                               headers={PEER_HEADER: "10.9.9.9"}))
    await asyncio.sleep(0.5)
    assert not pending.done()  # nobody listens yet: the request waits
    runner = await owner_app(socket_path)
    try:
        reply = await asyncio.wait_for(pending, 5)
        assert reply.status == 200 and reply.headers["Via"] == "1.1 mediaorigin"
        assert reply.headers["Cache-Control"] == "no-cache"
        # the real peer (the test client, 127.0.0.1), not the one the request named
        assert await reply.json() == {"peer": "127.0.0.1", "path": "/live/x/master.m3u8?token=t"}
        assert (await client.get("/healthz")).headers.get("Via") is None  # not forwarded
    finally:
        await runner.cleanup()


async def test_no_owner_is_a_502(aiohttp_client, tmp_path: Path,  # type: ignore[no-untyped-def]
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_proxy, "CONNECT_WAIT", 0.3)
    client = await aiohttp_client(forwarding_app(str(tmp_path / "nobody.sock")))
    reply = await client.get("/live/x/master.m3u8")
    assert reply.status == 502
    assert (await reply.json())["error"]["code"] == "live_worker_unavailable"
