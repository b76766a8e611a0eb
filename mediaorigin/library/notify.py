"""Progress notifications: wake this process's SSE streams and send outgoing webhooks.

Jobs may run in another process (`mediaorigin worker`), so SSE streams also poll the database;
the in-process wake-up only makes local progress show without delay.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .webhooks import WebhookEvent, WebhookSender


class Notifier:
    def __init__(self, webhooks: WebhookSender | None = None) -> None:
        self.webhooks = webhooks
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # Called with a media id when what players get changed (the origin revalidates).
        self.on_published: list[Callable[[str], None]] = []

    def published(self, media_id: str) -> None:
        for listener in self.on_published:
            listener(media_id)
        self.changed(media_id)

    def changed(self, media_id: str) -> None:
        for event in self._waiters.get(media_id, ()):
            event.set()

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """An outgoing webhook (media.ready, media.failed, job.progress...)."""
        if self.webhooks is not None:
            self.webhooks.emit(WebhookEvent(type, data))

    async def wait(self, media_id: str, timeout: float) -> None:
        """Return when the media item changes in this process, or after `timeout`."""
        event = asyncio.Event()
        self._waiters[media_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(media_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[media_id]
