"""Per-key rate limits (token bucket: ``rate`` requests/s, ``burst`` at once) and daily query budgets.

In-process by default; with Redis the buckets and budgets live in Redis (one Lua script, atomic), so all
workers and replicas share them. Budgets count examples (rows of a batch), not requests: extraction cost
is the number of queries, and batching must not dodge it. A day is a UTC calendar day.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from bastion.errors import InputError


@dataclass(frozen=True)
class Limit:
    rate: float | None = None  # requests per second
    burst: int | None = None
    daily_budget: int | None = None  # examples per UTC day


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0
    reason: str = ""


def _day() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _seconds_to_midnight() -> float:
    now = datetime.now(timezone.utc)
    return 86400.0 - (now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6)


class RateLimiter(Protocol):
    def check(self, key_id: str, limit: Limit, cost: int) -> Verdict: ...


class LocalLimiter:
    """Token buckets and day counters in this process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._days: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, limit: Limit, cost: int) -> Verdict:
        now = time.monotonic()
        with self._lock:
            if limit.daily_budget is not None:
                day = _day()
                d, used = self._days.get(key_id, (day, 0))
                if d != day:
                    used = 0
                if used + cost > limit.daily_budget:
                    return Verdict(False, _seconds_to_midnight(), "daily-budget")
            if limit.rate is not None:
                burst = float(limit.burst or max(1, math.ceil(limit.rate)))
                tokens, last = self._buckets.get(key_id, (burst, now))
                tokens = min(burst, tokens + (now - last) * limit.rate)
                if tokens < 1.0:
                    self._buckets[key_id] = (tokens, now)
                    return Verdict(False, (1.0 - tokens) / limit.rate, "rate-limit")
                self._buckets[key_id] = (tokens - 1.0, now)
            if limit.daily_budget is not None:
                self._days[key_id] = (_day(), used + cost)
        return Verdict(True)


# KEYS: bucket, day counter. ARGV: rate, burst, now (s), budget (-1 none), cost, day ttl (s).
# Returns {allowed (1/0), retry_after (ms), reason (0 ok, 1 rate, 2 budget)}.
_LUA = """
local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]); local now = tonumber(ARGV[3])
local budget = tonumber(ARGV[4]); local cost = tonumber(ARGV[5]); local ttl = tonumber(ARGV[6])
local used = 0
if budget >= 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used + cost > budget then return {0, math.ceil(ttl * 1000), 2} end
end
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 't', 'ts')
  local tokens = tonumber(b[1]) or burst; local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
    redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
    return {0, math.ceil((1 - tokens) / rate * 1000), 1}
  end
  redis.call('HSET', KEYS[1], 't', tokens - 1, 'ts', now)
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
end
if budget >= 0 then
  redis.call('INCRBY', KEYS[2], cost); redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 60)
end
return {1, 0, 0}
"""


class RedisLimiter:
    """The same limits kept in Redis, shared by every worker and replica."""

    def __init__(self, client: Any, prefix: str = "bastion:guard:rl") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_LUA)

    def check(self, key_id: str, limit: Limit, cost: int) -> Verdict:
        if limit.rate is None and limit.daily_budget is None:
            return Verdict(True)
        rate = limit.rate or 0.0
        burst = float(limit.burst or max(1, math.ceil(rate))) if rate else 0.0
        # Wall-clock time (not monotonic): several hosts share the bucket; one round trip per request.
        now = time.time()
        allowed, retry_ms, reason = self._script(
            keys=[f"{self.prefix}:{key_id}:bucket", f"{self.prefix}:{key_id}:day:{_day()}"],
            args=[rate, burst, now, -1 if limit.daily_budget is None else limit.daily_budget, cost,
                  _seconds_to_midnight()])
        if int(allowed):
            return Verdict(True)
        return Verdict(False, int(retry_ms) / 1000, "rate-limit" if int(reason) == 1 else "daily-budget")


def connect_redis(url: str | None) -> Any:
    if not url:
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise InputError("redis", url, f"a reachable Redis server ({exc})") from None
    return client
