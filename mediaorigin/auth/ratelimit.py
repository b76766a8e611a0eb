"""Token buckets per key (client IP, user, token), sans-IO: the caller passes `now`.

Each key holds up to `burst` tokens and regains `rate_per_s` per second; a request takes one
token or is refused (refusals take nothing). Memory is bounded by `max_keys`: the least
recently used key is forgotten first, which only ever errs towards letting a request
through (a forgotten key starts again with a full bucket).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

# Float refills (e.g. 0.1 s at 10/s) can land a hair below a whole token.
_EPSILON = 1e-9


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.rate = float(rate_per_s)
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token for `key` at `now`; False when its bucket is empty."""
        tokens, at = self._tokens(key, now)
        allowed = tokens >= 1 - _EPSILON
        if allowed:
            tokens = max(tokens - 1, 0.0)
        self._buckets[key] = (tokens, at)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, key: Hashable, now: float) -> float:
        """Seconds from `now` until `key` may make a request (0.0: right away). Takes nothing."""
        tokens, _ = self._tokens(key, now)
        if tokens >= 1 - _EPSILON:
            return 0.0
        return (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def _tokens(self, key: Hashable, now: float) -> tuple[float, float]:
        """The bucket refilled up to `now` (a clock that steps back refills nothing)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.burst), now
        tokens, at = bucket
        if now <= at:
            return tokens, at
        return min(float(self.burst), tokens + (now - at) * self.rate), now
