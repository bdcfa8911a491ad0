"""The per-function scaling rate: a token bucket of new environments.

Design notes: Lambda lets each function add up to 1,000 environments every 10 s,
refilled continuously rather than in steps. A bucket starts full, so a function at
rest can burst to its capacity at once; after that, new environments arrive at
``capacity / window`` per second. Time is passed in, so the books are testable.
"""

from __future__ import annotations


class TokenBucket:
    """Tokens refilled continuously up to ``capacity`` over ``window_s``."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, capacity: int, window_s: float, now: float) -> None:
        self._capacity = float(capacity)
        self._rate = capacity / window_s
        self._tokens = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    def try_take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self, now: float) -> None:
        """Return an unused token (an environment that was not created after all)."""
        self._refill(now)
        self._tokens = min(self._capacity, self._tokens + 1.0)

    def seconds_until_token(self, now: float) -> float:
        """How long until one token is there (0 if one is there now)."""
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= self._capacity
