"""Analytics in one process: the aggregator (serve by default, and `mediaorigin worker`) and
the reader the API queries with, both on `[redis] url`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from ..config import Config
from ..library import schema
from ..library.repository import Library
from .aggregator import Aggregator, Durations
from .queries import AnalyticsReader

DURATION_TTL = 300.0  # seconds a looked-up duration is trusted (a re-upload may change it)
_CACHE_MAX = 10000


@dataclass
class AnalyticsServices:
    reader: AnalyticsReader | None
    aggregator: Aggregator | None

    async def stop(self) -> None:
        if self.aggregator is not None:
            await self.aggregator.stop()
        if self.reader is not None:
            await self.reader.close()


async def start_analytics(config: Config, library: Library | None, *, aggregate: bool,
                          read: bool) -> AnalyticsServices:
    """Nothing when `[analytics] enabled` is off. The aggregator starts at once and never
    fails to: with Redis away it retries in the background."""
    if not config.analytics.enabled:
        return AnalyticsServices(None, None)
    aggregator = None
    if aggregate:
        aggregator = Aggregator(config.redis.url,
                                durations=library_durations(library) if library else None)
        await aggregator.start()
    return AnalyticsServices(AnalyticsReader(config.redis.url) if read else None, aggregator)


def library_durations(library: Library) -> Durations:
    """Media durations from the library's `media.duration`, cached for DURATION_TTL."""
    cache: dict[str, tuple[float, float | None]] = {}
    m = schema.media

    async def duration(media_id: str) -> float | None:
        now = time.monotonic()
        hit = cache.get(media_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with library.engine.connect() as conn:
            value = (await conn.execute(select(m.c.duration).where(m.c.id == media_id))
                     ).scalar()
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[media_id] = (now + DURATION_TTL, float(value) if value else None)
        return cache[media_id][1]

    return duration
