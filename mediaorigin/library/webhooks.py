"""Outgoing webhooks: library events POSTed to subscriber URLs, signed with HMAC-SHA256.

Signing scheme (a public contract: receivers implement it, so change it only by adding a
new ``vN=`` version next to ``v1=``)::

    POST <url>
    Content-Type: application/json
    User-Agent: mediaorigin-webhooks/1
    Mediaorigin-Event: <event type>                  e.g. media.ready
    Mediaorigin-Delivery: <32 hex digits>            idempotency key, the same on every retry
    Mediaorigin-Signature: t=<unix seconds>,v1=<64 hex digits>[,v1=<64 hex digits>...]

    {"id": "<32 hex digits>", "type": "<event type>", "created": <unix seconds>, "data": {...}}

``v1 = hex(HMAC-SHA256(secret, f"{t}.".encode() + raw_body))``. The timestamp is taken at each
attempt, so a retry hours later is still fresh. Receivers should, in this order:

1. compute the HMAC over the *raw* request bytes (not re-serialised JSON) for each ``v1=``
   entry and accept if any matches under any of their secrets (constant-time comparison);
   several entries appear while a secret is being rotated, unknown ``vN=`` entries are ignored;
2. reject if ``|now - t|`` exceeds a tolerance (300 s by default) to bound replays;
3. de-duplicate on ``Mediaorigin-Delivery``: delivery is at-least-once;
4. answer 2xx quickly. 408, 429 and 5xx (honouring ``Retry-After`` seconds), timeouts and
   connection errors are retried with exponential backoff and full jitter; any other status
   (other 4xx, 3xx: redirects are not followed) is a permanent failure.

`verify` implements steps 1-2 for Python receivers. `WebhookSender` never blocks the caller:
`emit` enqueues, a small fixed pool of tasks delivers, and delayed retries wait in a heap
rather than in a sleeping worker, so one slow subscriber cannot hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Mediaorigin-Signature"
EVENT_HEADER = "Mediaorigin-Event"
DELIVERY_HEADER = "Mediaorigin-Delivery"
USER_AGENT = "mediaorigin-webhooks/1"
RECENT_OUTCOMES = 100

SignatureErrorCode = Literal[
    "missing_signature", "malformed_signature", "stale_signature", "bad_signature"
]

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """A webhook signature did not verify; `code` is stable, `message` is for humans."""

    def __init__(self, code: SignatureErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: SignatureErrorCode = code
        self.message = message


def _secrets(secret: bytes | Sequence[bytes]) -> list[bytes]:
    """Accept one secret or several (rotation), refusing empty keys: they sign nothing."""
    keys = [secret] if isinstance(secret, bytes | bytearray) else list(secret)
    if not keys or not all(isinstance(k, bytes | bytearray) and k for k in keys):
        raise ValueError("webhook secrets must be non-empty bytes")
    return [bytes(k) for k in keys]


def _digest(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes | Sequence[bytes], body: bytes, timestamp: int) -> str:
    """The `Mediaorigin-Signature` value; several secrets give one `v1=` each (rotation)."""
    entries = [f"v1={_digest(key, body, timestamp)}" for key in _secrets(secret)]
    return ",".join([f"t={timestamp}", *entries])


def _parse(header: str) -> tuple[int, list[str]]:
    """Split `t=...,v1=...` strictly: anything ambiguous is malformed, not guessed at."""
    timestamps: list[str] = []
    digests: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_signature", "expected comma-separated key=value")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            if not _HEX_DIGEST.fullmatch(value):
                raise SignatureError("malformed_signature", "v1 must be 64 hex digits")
            digests.append(value.lower())
        # Other keys (v2=, ...) are ignored so the scheme can grow without breaking receivers.
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureError("malformed_signature", "expected exactly one t=<unix seconds>")
    if not digests:
        raise SignatureError("malformed_signature", "no v1 signature")
    return int(timestamps[0]), digests


def verify(
    secret: bytes | Sequence[bytes],
    body: bytes,
    header: str | None,
    now: float,
    tolerance: float = 300,
) -> None:
    """Raise `SignatureError` unless `header` signs `body` with one of the secrets, recently.

    The signature is checked before the age so a stale error means "authentic but old".
    `now` is passed in (unix seconds) so callers and tests control the clock.
    """
    keys = _secrets(secret)
    if header is None or not header.strip():
        raise SignatureError("missing_signature", f"no {SIGNATURE_HEADER} header")
    timestamp, digests = _parse(header)
    expected = [_digest(key, body, timestamp) for key in keys]
    # Compare every pair (no early exit) so timing does not tell which entry came close.
    matched = False
    for want in expected:
        for got in digests:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise SignatureError("bad_signature", "no v1 signature matches")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("stale_signature", f"timestamp outside {tolerance:g} s of now")


@dataclass(frozen=True)
class WebhookEvent:
    """One thing that happened in the library; serialised once and sent to every URL."""

    type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def __bytes__(self) -> bytes:
        doc = {"id": self.id, "type": self.type, "created": self.created, "data": self.data}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, body: bytes) -> WebhookEvent:
        """For receivers, after `verify`: the body back into an event."""
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ValueError("webhook body is not JSON") from exc
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("id"), str)
            and isinstance(doc.get("type"), str)
            and isinstance(doc.get("created"), int | float)
            and isinstance(doc.get("data"), dict)
        ):
            raise ValueError("webhook body lacks id, type, created or data")
        return cls(type=doc["type"], data=doc["data"], id=doc["id"], created=doc["created"])


@dataclass(frozen=True)
class DeliveryOutcome:
    """How one delivery ended, kept in `WebhookSender.recent` for debugging."""

    event_id: str
    delivery_id: str
    url: str
    result: int | str  # final HTTP status, or an error such as "timeout" or "dropped"
    attempts: int
    ok: bool


@dataclass(eq=False)
class _Delivery:
    event: WebhookEvent
    url: str
    body: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0


def _redact(url: URL) -> str:
    """Userinfo and query strings may hold receiver tokens: keep them out of logs."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After in delay-seconds form only; the HTTP-date form falls back to backoff."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), cap)


class WebhookSender:
    """Delivers events to every configured URL, at least once, without blocking emitters.

    Deliveries wait in a bounded FIFO; due retries are taken before new deliveries. When
    full, the oldest waiting delivery is dropped (or, if none waits, the next due retry).
    Not thread-safe: call `emit` from the event loop's thread.
    """

    concurrency = 4

    def __init__(
        self,
        urls: list[str],
        secret: bytes | Sequence[bytes],
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        timeout: float = 10.0,
        queue_size: int = 10000,
    ) -> None:
        self._urls: list[URL] = []
        for raw in urls:
            url = URL(raw)
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"webhook URL must be http(s) with a host: {raw!r}")
            self._urls.append(url)
        if max_attempts < 1 or queue_size < 1:
            raise ValueError("max_attempts and queue_size must be at least 1")
        self._secrets = _secrets(secret)
        self._session_factory = session_factory
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.queue_size = queue_size
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._recent: deque[DeliveryOutcome] = deque(maxlen=RECENT_OUTCOMES)
        self._ready: deque[_Delivery] = deque()
        self._retries: list[tuple[float, int, _Delivery]] = []  # (loop time due, tiebreak, d)
        self._seq = itertools.count()
        self._in_flight = 0
        self._wakeup = asyncio.Event()  # workers: something became ready or was scheduled
        self._changed = asyncio.Event()  # stop(): a delivery finished
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def recent(self) -> list[DeliveryOutcome]:
        """The last 100 final outcomes, oldest first."""
        return list(self._recent)

    @property
    def pending(self) -> int:
        """Deliveries waiting or scheduled for retry (not counting those in flight)."""
        return len(self._ready) + len(self._retries)

    def emit(self, event: WebhookEvent) -> None:
        """Queue `event` for every URL and return at once; serialisation errors raise here."""
        body = bytes(event)
        for url in self._urls:
            if self.pending >= self.queue_size:
                self._drop_oldest()
            self._ready.append(_Delivery(event, str(url), body))
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        if self._ready:
            victim = self._ready.popleft()
        else:
            _, _, victim = heapq.heappop(self._retries)
        self.dropped += 1
        self._record(victim, "dropped", ok=False)
        log.warning(
            "webhook queue full (%d): dropped %s event %s for %s (%d dropped so far)",
            self.queue_size,
            victim.event.type,
            victim.event.id,
            _redact(URL(victim.url)),
            self.dropped,
        )

    async def start(self) -> None:
        """Open the HTTP session and the delivery pool; queued events start flowing."""
        if self._workers:
            raise RuntimeError("WebhookSender already started")
        self._session = self._session_factory()
        self._workers = [
            asyncio.create_task(self._worker(), name=f"webhook-worker-{n}")
            for n in range(self.concurrency)
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `drain_timeout`, then cancel the rest.

        Returns once nothing is waiting, in flight or due before the deadline, or at the
        deadline, whichever is first, even if a receiver hangs. Undelivered work stays queued
        (in-flight requests go back to the front), so a later `start` resumes it.
        """
        if not self._workers:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while not self._quiescent(deadline):
                    self._changed.clear()
                    await self._changed.wait()
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.pending:
            log.warning("webhook sender stopped with %d deliveries pending", self.pending)

    def _quiescent(self, deadline: float) -> bool:
        """Nothing more can be delivered before `deadline`."""
        if self._ready or self._in_flight:
            return False
        return not self._retries or self._retries[0][0] > deadline

    def _take(self, now: float) -> _Delivery | None:
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2]
        if self._ready:
            return self._ready.popleft()
        return None

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delivery = self._take(loop.time())
            if delivery is None:
                # Sleep until the next retry is due or new work arrives, whichever is first.
                due = self._retries[0][0] if self._retries else None
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._wakeup.wait()
                continue
            self._in_flight += 1
            try:
                await self._attempt(delivery)
            except asyncio.CancelledError:
                self._ready.appendleft(delivery)
                raise
            except Exception:  # a bug must not shrink the pool
                log.exception("webhook delivery %s crashed", delivery.id)
                self._fail(delivery, "internal error")
            finally:
                self._in_flight -= 1
                self._changed.set()

    async def _attempt(self, delivery: _Delivery) -> None:
        """One POST; then success, a scheduled retry, or a final failure."""
        assert self._session is not None
        delivery.attempts += 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: delivery.event.type,
            DELIVERY_HEADER: delivery.id,
            SIGNATURE_HEADER: sign(self._secrets, delivery.body, int(time.time())),
        }
        result: int | str
        retry_after: str | None = None
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                result = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            result = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            result = f"{type(exc).__name__}: {exc}"

        if isinstance(result, int) and 200 <= result < 300:
            self.delivered += 1
            self._record(delivery, result, ok=True)
            return
        retryable = not isinstance(result, int) or result >= 500 or result in (408, 429)
        url = _redact(URL(delivery.url))
        if not retryable:
            log.warning("webhook %s to %s refused with %s, not retrying", delivery.id, url, result)
            self._fail(delivery, result)
            return
        if delivery.attempts >= self.max_attempts:
            log.warning(
                "webhook %s to %s gave up after %d attempts: %s",
                delivery.id,
                url,
                delivery.attempts,
                result,
            )
            self._fail(delivery, result)
            return
        delay = _retry_after(retry_after, self.max_delay)
        if delay is None:
            ceiling = min(self.max_delay, self.base_delay * 2 ** (delivery.attempts - 1))
            delay = random.uniform(0, ceiling)
        log.info(
            "webhook %s to %s attempt %d: %s; retrying in %.2f s",
            delivery.id,
            url,
            delivery.attempts,
            result,
            delay,
        )
        due = asyncio.get_running_loop().time() + delay
        heapq.heappush(self._retries, (due, next(self._seq), delivery))
        self._wakeup.set()

    def _fail(self, delivery: _Delivery, result: int | str) -> None:
        self.failed += 1
        self._record(delivery, result, ok=False)

    def _record(self, delivery: _Delivery, result: int | str, ok: bool) -> None:
        self._recent.append(
            DeliveryOutcome(
                event_id=delivery.event.id,
                delivery_id=delivery.id,
                url=_redact(URL(delivery.url)),
                result=result,
                attempts=delivery.attempts,
                ok=ok,
            )
        )
