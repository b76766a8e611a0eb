"""The RTMP listener: one asyncio task per client, each driving a sans-IO `ServerSession`.

All protocol logic is in session.py; this file moves bytes, asks the `PublishGate` when a
client publishes, hands TrackConfig/Frame events to the sink it got, and ends connections:
on disconnect, protocol error, refusal or `timeout` seconds without a byte from the client,
the sink (if any) is closed exactly once and the socket closed. Stream keys are secrets:
logs show a short prefix at most (`redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..frames import Frame, PublishGate, PublishRefused, PublishSink, TrackConfig
from .chunks import RtmpProtocolError
from .session import Connected, PublishRequested, ServerSession, Unpublished

log = logging.getLogger("mediaorigin.ingest.rtmp")

READ_SIZE = 64 * 1024


def redact(key: str) -> str:
    """What of a stream key may be logged: at most 4 characters, a third of it at most."""
    return key[: min(4, len(key) // 3)] + "…"


class RtmpServer:
    def __init__(self, gate: PublishGate, host: str = "127.0.0.1", port: int = 1935,
                 timeout: float = 10.0) -> None:
        self.gate = gate
        self.host = host
        self.timeout = timeout
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0), after start()."""
        return self._port

    @property
    def connection_count(self) -> int:
        """Connections being served right now (handshaking, idle or publishing)."""
        return len(self._tasks)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("RtmpServer already started")
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp: listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Stop listening and end every connection (their sinks are closed)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        log.info("rtmp: stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._server is None:  # accepted just as stop() ran
            writer.transport.abort()
            return
        self._tasks.add(task)
        connection = _Connection(self, reader, writer)
        try:
            await connection.run()
        finally:
            self._tasks.discard(task)


class _Connection:
    """One client: read, feed the session, act on its events, write its answers."""

    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote = str(peer[0])
        self.name = f"{peer[0]}:{peer[1]}"
        self.session = ServerSession()
        self.sink: PublishSink | None = None

    async def run(self) -> None:
        try:
            await self._loop()
        except RtmpProtocolError as e:
            log.warning("rtmp %s: protocol error: %s", self.name, e)
        except TimeoutError:
            log.info("rtmp %s: timed out (%ss without data from the client, or the client not "
                     "reading)", self.name, self.server.timeout)
        except ConnectionError as e:
            log.info("rtmp %s: connection lost: %s", self.name, e)
        except asyncio.CancelledError:
            log.info("rtmp %s: closed by server shutdown", self.name)
            raise
        except Exception:
            log.exception("rtmp %s: connection failed", self.name)
        finally:
            self._close_sink()
            await self._close_socket()

    async def _loop(self) -> None:
        timeout = self.server.timeout
        while not self.session.closed:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(READ_SIZE)
            if not data:
                log.info("rtmp %s: disconnected", self.name)
                return
            for event in self.session.receive(data):
                await self._event(event)
                if self.session.closed:
                    break
            await self._flush()

    async def _event(self, event: object) -> None:
        if isinstance(event, Frame):
            if self.sink is not None:
                self.sink.on_frame(event)
        elif isinstance(event, TrackConfig):
            if self.sink is not None:
                self.sink.on_track(event)
        elif isinstance(event, PublishRequested):
            await self._publish(event)
        elif isinstance(event, Unpublished):
            log.info("rtmp %s: unpublished %s", self.name, redact(event.stream_key))
            self._close_sink()
        elif isinstance(event, Connected):
            log.info("rtmp %s: connected to app %r", self.name, event.app)

    async def _publish(self, event: PublishRequested) -> None:
        key = redact(event.stream_key)
        try:
            async with asyncio.timeout(self.server.timeout):
                sink = await self.server.gate.open_publisher(
                    "rtmp", event.app, event.stream_key, self.remote)
        except PublishRefused as e:
            log.info("rtmp %s: publish %s/%s refused (%s)", self.name, event.app, key, e.code)
            self.session.refuse_publish(e.code, e.message)
            return
        except TimeoutError:
            log.warning("rtmp %s: publish %s/%s: no answer from the gate in %ss", self.name,
                        event.app, key, self.server.timeout)
            self.session.refuse_publish("NetStream.Publish.Failed", "authorization timed out")
            return
        except Exception:
            log.exception("rtmp %s: publish %s/%s: the gate failed", self.name, event.app, key)
            self.session.refuse_publish("NetStream.Publish.Failed", "internal error")
            return
        self.sink = sink
        self.session.accept_publish()
        log.info("rtmp %s: publishing %s/%s", self.name, event.app, key)

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)
            async with asyncio.timeout(self.server.timeout):
                await self.writer.drain()

    def _close_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.exception("rtmp %s: sink.close() failed", self.name)

    async def _close_socket(self) -> None:
        writer = self.writer
        with contextlib.suppress(Exception):
            data = self.session.data_to_send()  # e.g. a refusal's onStatus
            if data and not writer.is_closing():
                writer.write(data)
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
