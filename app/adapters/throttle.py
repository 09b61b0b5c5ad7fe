"""Per-destination-domain limits in Redis, shared by every worker process (seed §16).

Concurrency is a counting semaphore: a sorted set of holder tokens scored by their expiry, so a
holder that dies (SIGKILL) frees its slot by itself after ``ttl``. Acquire is one Lua script
(expire dead holders, count, add) so two processes can never both take the last slot. The rate
limit is RedisStore's fixed-window counter. Both answer "not now, retry in N seconds": the
caller defers, it never fails a recipient for a limit of ours.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from app.adapters.redis_store import RedisStore

_ACQUIRE = """
local key, now, ttl, limit, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
                                    tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now + ttl, token)
redis.call('EXPIRE', key, math.ceil(ttl) + 5)
return 1
"""


@dataclass(frozen=True)
class Slot:
    domain: str
    token: str


class DomainThrottle:
    def __init__(
        self, store: RedisStore, *, concurrency: int, rate_per_minute: int, slot_ttl: float = 300.0
    ) -> None:
        self.store = store
        self.concurrency = concurrency
        self.rate_per_minute = rate_per_minute
        self.slot_ttl = slot_ttl
        self._script = store.client.register_script(_ACQUIRE)

    def _key(self, domain: str) -> str:
        return self.store.key("throttle", "conn", domain)

    async def acquire(self, domain: str) -> Slot | None:
        """A connection slot for ``domain``, or None when all are taken.

        When Redis is unreachable the slot is granted: limits protect reputation, and losing
        them for a moment must not stop mail (DESIGN.md §6 lets Redis lose data).
        """
        token = secrets.token_hex(8)
        try:
            granted = await self._script(
                keys=[self._key(domain)], args=[time.time(), self.slot_ttl, self.concurrency, token]
            )
        except RedisError:
            return Slot(domain, token)
        return Slot(domain, token) if int(granted) == 1 else None

    async def renew(self, slot: Slot) -> None:
        """Push the slot's expiry forward (long-running senders)."""
        try:
            await self.store.client.zadd(
                self._key(slot.domain), {slot.token: time.time() + self.slot_ttl}
            )
        except RedisError:
            pass

    async def release(self, slot: Slot) -> None:
        try:
            await self.store.client.zrem(self._key(slot.domain), slot.token)
        except RedisError:
            pass

    async def take_rate(self, domain: str, messages: int) -> int:
        """0 when ``messages`` more may go to ``domain`` now, else seconds to wait."""
        if self.rate_per_minute <= 0:
            return 0
        try:
            verdict = await self.store.hit(
                f"domain-rate:{domain}", self.rate_per_minute, 60, cost=messages
            )
        except Exception:  # ServiceUnavailable: as above, a lost limiter never stops mail
            return 0
        return 0 if verdict.allowed else verdict.retry_after_seconds
