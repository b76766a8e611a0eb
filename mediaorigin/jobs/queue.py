"""The job-queue contract shared by the in-process and Redis Streams backends.

A queue knows nothing about what a job does: it carries an id and a small payload to a
handler supplied by the caller (the processing pipeline, which records outcomes itself).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class QueuedJob:
    """One delivery of a job; `attempt` counts deliveries (1 on the first run)."""

    job_id: str
    payload: dict[str, str]
    priority: int
    attempt: int


Handler = Callable[[QueuedJob], Awaitable[None]]
"""Runs one job. Raising marks nothing: the queue logs it and moves on."""


class JobQueue(Protocol):
    """What the application needs from a queue, whichever backend runs the jobs."""

    async def submit(
        self, job_id: str, payload: dict[str, str] | None = None, priority: int = 0
    ) -> None:
        """Enqueue a job; higher `priority` runs first."""
        ...

    async def start(self, handler: Handler) -> None:
        """Start consuming jobs with `handler`."""
        ...

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking jobs; running ones get `grace` seconds, then are cancelled."""
        ...

    async def depth(self) -> int:
        """Jobs waiting plus jobs running (for metrics and back-pressure)."""
        ...

    def running(self) -> int:
        """Jobs this process is running right now."""
        ...
