"""Segments sent while a packager thread is still making them (see packaging/crypto/progressive).

A cold AES-128 segment (whole-segment CBC: serial, as slow as the transfer) is made chunk by
chunk in the thread pool; each finished chunk is announced to the event loop, which writes it
to every response following that segment, so the cipher and the transfer overlap. Concurrent
requests for the same cold segment follow the same `Growing` (one packaging run), and the
finished bytes go to the segment cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from ..packaging.crypto.progressive import Progressive

log = logging.getLogger(__name__)


class Growing:
    """The bytes of one segment as they are made. Mutated only on the event loop."""

    def __init__(self) -> None:
        self.size: int | None = None
        self.view = memoryview(b"")
        self.ready = 0  # view[:ready] is final
        self.error: BaseException | None = None
        self._changed = asyncio.Event()

    def begin(self, size: int, view: memoryview) -> None:
        self.size, self.view = size, view
        self._wake()

    def advance(self, ready: int) -> None:
        self.ready = ready
        self._wake()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._wake()

    def _wake(self) -> None:
        # each waiter holds the event it waits on: set it and start a fresh one
        self._changed.set()
        self._changed = asyncio.Event()

    async def started(self) -> int:
        """The segment's size once known; re-raises what stopped it from being made."""
        while self.size is None and self.error is None:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        assert self.size is not None
        return self.size

    async def beyond(self, sent: int) -> int:
        """Wait until more than `sent` bytes are final; how many are."""
        while self.ready <= sent and self.error is None:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        return self.ready

    async def whole(self) -> memoryview:
        size = await self.started()
        if self.ready < size:
            await self.beyond(size - 1)
        return self.view


def grow(loop: asyncio.AbstractEventLoop, make: Callable[[], Progressive],
         keep: Callable[[memoryview], None]) -> tuple[Growing, Callable[[], None]]:
    """A Growing and the function that fills it, to be run in a worker thread: it calls
    `make`, publishes each step to the loop, then hands the finished bytes to `keep`."""
    growing = Growing()

    def work() -> None:
        try:
            progressive = make()
            view = memoryview(progressive.buffer)[: progressive.size]
            loop.call_soon_threadsafe(growing.begin, progressive.size, view)
            for ready in progressive.fill:
                loop.call_soon_threadsafe(growing.advance, ready)
        except BaseException as e:
            loop.call_soon_threadsafe(growing.fail, e)
            raise
        keep(view)

    return growing, work


class GrowingResponse(web.StreamResponse):
    """A 200 whose body is written as its Growing fills."""

    def __init__(self, growing: Growing, status: int, headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self._growing = growing
        assert growing.size is not None
        self.content_length = growing.size

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]  # noqa: ANN201
        writer = await super().prepare(request)
        if request.method == "HEAD":
            return writer
        growing, size, sent = self._growing, self.content_length or 0, 0
        try:
            while sent < size:
                ready = await growing.beyond(sent)
                await self.write(growing.view[sent:ready])
                sent = ready
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            # The headers promised `size` bytes: end the connection so the client sees a
            # short body, never a wrong one.
            log.exception("segment failed after its headers were sent")
            if request.transport is not None:
                request.transport.close()
            return writer
        await self.write_eof()
        return writer
