"""Concurrent streams per viewer: `[auth] max_streams_per_user` slots per token user, held in
Redis by every playback request of the session (the heartbeat) and released by
`DELETE /vod/{id}/session` or after `auth.stream_ttl` seconds without a request.

Redis being away never stops playback: the limit is not enforced meanwhile (logged once).
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis.exceptions import RedisError

from .concurrency import StreamSlots
from .playback_guard import AccessDenied, Grant

log = logging.getLogger("mediaorigin.viewers")


class ViewerSlots:
    def __init__(self, slots: StreamSlots | None) -> None:
        self.slots = slots
        self._outage = False

    @staticmethod
    def session_of(grant: Grant, token: str | None) -> str:
        """The token's session claim, else the token itself (hashed: tokens stay out of
        Redis)."""
        return grant.session or hashlib.sha256((token or "").encode()).hexdigest()[:24]

    async def admit(self, grant: Grant, token: str | None) -> None:
        if self.slots is None or grant.user is None:
            return
        try:
            ok = await self.slots.acquire(grant.user, self.session_of(grant, token),
                                          time.time())
        except (RedisError, OSError):
            if not self._outage:
                log.warning("Redis unreachable: concurrent stream limits are not enforced")
            self._outage = True
            return
        self._outage = False
        if not ok:
            raise AccessDenied("too_many_streams",
                               "this account is already watching on too many devices")

    async def leave(self, grant: Grant, token: str | None) -> None:
        if self.slots is None or grant.user is None:
            return
        try:
            await self.slots.release(grant.user, self.session_of(grant, token))
        except (RedisError, OSError):
            log.warning("Redis unreachable: a stream slot is freed by its ttl instead")
