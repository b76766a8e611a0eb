"""Live streams with several workers: every worker answers /live and /api/live, one owns them.

A live channel (its parts, blocking reloads, the RTMP and WHIP sessions feeding it) lives in
the process that ingests it: the first worker. The others share its port (SO_REUSEPORT), so
a player's request may land on any of them; they pass /live/... and /api/live... on to the
first worker over a Unix socket only this host can reach, and stream the answer back.

The first worker would see every forwarded request as coming from the socket: the worker
that forwards names the real peer in `PEER_HEADER`, which is believed only on that socket
(over TCP it is ignored like any other header), so tokens bound to an address, network rules
and trusted proxies work the same whichever worker a request reached.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..errors import ClientError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PEER_HEADER = "X-Mediaorigin-Peer"
CONNECT_WAIT = 15.0  # seconds a request waits for the first worker to (re)start listening
# Not passed on: they describe one connection (RFC 9110 7.6.1), or are set again here.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding",
                        "upgrade", "host", "content-length", PEER_HEADER.lower()})


def owned_by_live_worker(path: str) -> bool:
    return path.startswith("/live/") or path == "/api/live" or path.startswith("/api/live/")


class LiveProxy:
    """In the workers that do not ingest: forward live requests to the one that does."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No pool limit: blocking playlist reloads hold a connection each until answered.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path, limit=0),
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None,
                                                                     sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def forward(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not owned_by_live_worker(request.path):
                return await handler(request)
            return await self.forward(request)

        return forward

    async def forward(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        headers[PEER_HEADER] = request.remote or ""
        body = await request.read() if request.body_exists else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_WAIT
        while True:
            try:
                return await self._relay(request, headers, body)
            except aiohttp.ClientConnectorError as e:
                # Nothing was sent: the first worker is still starting (or restarting).
                if loop.time() >= deadline:
                    raise ClientError(502, "live_worker_unavailable",
                                      "the worker that serves live streams is not answering"
                                      ) from e
                await asyncio.sleep(0.1)

    async def _relay(self, request: web.Request, headers: CIMultiDict[str],
                     body: bytes | None) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        try:
            async with self.session().request(
                    request.method, "http://live-worker" + request.raw_path, headers=headers,
                    data=body, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                response.headers["Via"] = "1.1 mediaorigin"
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(256 * 1024):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectorError:
            raise
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            if response is not None and response.prepared:
                if request.transport is not None:  # a short answer, never a wrong one
                    request.transport.close()
                raise ConnectionResetError("live worker went away") from e
            raise ClientError(502, "live_worker_unavailable",
                              "the worker that serves live streams is not answering") from e


def trust_peer_on(socket_path: str
                  ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """In the worker that ingests: requests that came over the workers' socket carry their
    real peer in PEER_HEADER."""

    @web.middleware
    async def peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(sockname, bytes):
            sockname = os.fsdecode(sockname)
        if sockname == socket_path:
            try:
                address = str(ipaddress.ip_address(request.headers.get(PEER_HEADER, "")))
            except ValueError:
                raise ClientError(400, "bad_request", "forwarded without its peer") from None
            request = request.clone(remote=address)
        return await handler(request)

    return peer
