"""Choose the queue backend from configuration."""

from __future__ import annotations

from typing import Any

from .inprocess import InProcessQueue
from .queue import JobQueue

BACKENDS = ("inprocess", "redis")


def make_queue(backend: str, redis_url: str, concurrency: int, **kw: Any) -> JobQueue:
    """Build the configured queue; extra keywords go to the backend's constructor."""
    if backend == "inprocess":
        return InProcessQueue(concurrency=concurrency, **kw)
    if backend == "redis":
        # Imported here so the in-process deployment never needs a Redis client.
        from .redis_streams import RedisStreamQueue

        return RedisStreamQueue(redis_url, concurrency=concurrency, **kw)
    raise ValueError(
        f"unknown job queue backend {backend!r}: expected one of {', '.join(BACKENDS)}"
    )
