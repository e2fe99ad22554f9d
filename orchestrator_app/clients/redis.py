"""Redis for the command API: per-client rate limits and Idempotency-Key records.

Neither is on the payment hot path (the saga needs no lock: one partition, one writer).
Both fail closed: if Redis cannot be reached, the command API answers 503 rather than
accept a command it could not rate-limit or deduplicate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_ERRORS", "IdempotencyRecord", "RateDecision", "RedisClient"]

#: "Redis is not reachable right now."
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError,
                                                 OSError)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after: int


@dataclass(frozen=True)
class IdempotencyRecord:
    """What is stored under an Idempotency-Key: the request's fingerprint, then its answer."""

    fingerprint: str
    status: int | None = None  # None while the first request is still being handled
    body: str | None = None

    def dumps(self) -> str:
        return json.dumps({"f": self.fingerprint, "s": self.status, "b": self.body})

    @classmethod
    def loads(cls, raw: str | bytes) -> IdempotencyRecord:
        data = json.loads(raw)
        return cls(fingerprint=data["f"], status=data["s"], body=data["b"])


class RedisClient(faust.Service):
    """A lazily connected client; `redis.asyncio` keeps its own pool and reconnects."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._url = url
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self._url, socket_timeout=2, socket_connect_timeout=2,
                health_check_interval=30,
            )
        return self._redis

    async def on_stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def rate_limit(self, client: str, limit: int, window: int = 60) -> RateDecision:
        """Fixed window of `window` seconds: at most `limit` requests per client."""
        now = int(time.time())
        bucket = now // window
        key = f"po:rate:{client}:{bucket}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window + 5)
            count, _ = await pipe.execute()
        retry_after = (bucket + 1) * window - now
        return RateDecision(int(count) <= limit, max(limit - int(count), 0), max(retry_after, 1))

    async def count(self, client: str, window: int = 60) -> int:
        """How many `rate_limit` hits `client` has in the current window (no increment)."""
        raw = await self.redis.get(f"po:rate:{client}:{int(time.time()) // window}")
        return int(raw or 0)

    async def idempotency_begin(
        self, client: str, key: str, fingerprint: str, ttl: int
    ) -> IdempotencyRecord | None:
        """Claim `key` for this request; return None if claimed, else the existing record."""
        name = self._idem_key(client, key)
        claimed = await self.redis.set(name, IdempotencyRecord(fingerprint).dumps(),
                                       nx=True, ex=ttl)
        if claimed:
            return None
        raw = await self.redis.get(name)
        if raw is None:  # expired between the two calls: claim again
            return await self.idempotency_begin(client, key, fingerprint, ttl)
        return IdempotencyRecord.loads(raw)

    async def idempotency_finish(
        self, client: str, key: str, record: IdempotencyRecord, ttl: int
    ) -> None:
        await self.redis.set(self._idem_key(client, key), record.dumps(), ex=ttl)

    async def idempotency_release(self, client: str, key: str) -> None:
        """Forget a claim whose request failed (5xx), so the client may retry it."""
        await self.redis.delete(self._idem_key(client, key))

    @staticmethod
    def _idem_key(client: str, key: str) -> str:
        return f"po:idem:{client}:{key}"
