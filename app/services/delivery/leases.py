"""Domain leases (DESIGN.md §5 "Deliver"): which worker process delivers a destination domain.

A process takes a domain's lease (one small ``domain_leases`` document keyed by the domain)
before it pulls that domain's mail, renews every lease it holds while it works, and gives a
lease back once the domain is idle (no lane, nothing in flight, not in a pull round) for
IDLE_HOLD seconds, so another worker can take it at once (its document stays, ended: the
sweep looks at the mail of domains nobody holds, sweep.py). Recipients need no lease write of
their own: a delivered recipient costs one write (its outcome) instead of two. A lease that is
not renewed expires, so a killed worker's domains are taken over after ``lease`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.mongo import is_duplicate_key
from app.background import stop_task
from app.services.delivery.outbox import DomainLease, chunked

log = structlog.get_logger(__name__)

IDLE_HOLD = 2.0  # seconds an idle domain's lease is kept for more of its mail
HELD_RETRY = 5.0  # at most this long before asking again for a domain another worker holds


class DomainLeases:
    """The domain leases this process holds: take, renew, give back.

    ``is_idle(domain)`` says whether the domain may be given back (the pull rounds and lanes
    know); ``wake(domain)`` is called when a domain held by another worker may be free again.
    """

    def __init__(
        self,
        db: Any,
        lease: timedelta,
        *,
        is_idle: Callable[[str], bool],
        wake: Callable[[str], None],
        min_left: timedelta = timedelta(0),
    ) -> None:
        self.db = db
        self.lease = lease
        # Lanes start no transaction on a lease with less than this left (lanes.py): a held
        # lease this close to its end is renewed by the next pull round, not handed out as is.
        self.min_left = min_left
        self._is_idle = is_idle
        self._wake = wake
        self.token = ObjectId()  # this process's mark on the leases it holds
        self.held: dict[str, DomainLease] = {}
        # One lock for taking, renewing and giving leases back, so the three never interleave.
        self._lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        # Timers: retry a domain held elsewhere, give back an idle one.
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._releasing: set[asyncio.Task[None]] = set()  # leases being given back (close waits)
        self._closed = False

    async def hold(self, domains: list[str], now: datetime) -> set[str]:
        """The domains among ``domains`` whose lease this process holds (taking the free
        ones); a domain held by another worker is asked about again when its lease may end."""
        async with self._lock:
            # A renewal that ran late (a busy event loop) leaves a lease too short for the
            # lanes: they would give every recipient back at once, and the next round would
            # hand them the same short lease again. Take such a lease anew.
            usable = now + self.min_left
            need = [d for d in domains if d not in self.held or self.held[d].until <= usable]
            until = now + self.lease
            results = await asyncio.gather(
                *(self._take(d, now, until) for d in need), return_exceptions=True
            )
            for domain, result in zip(need, results, strict=True):
                if isinstance(result, BaseException):
                    if not is_duplicate_key(result):
                        log.warning("taking a domain lease failed", domain=domain, error=result)
                    self.held.pop(domain, None)
                    self._later("retry", domain, HELD_RETRY, self._retry)
                    continue
                lease = self.held.get(domain)
                if lease is None:
                    self.held[domain] = DomainLease(domain, until)
                else:
                    lease.until = until
            if self.held and (self._renewer is None or self._renewer.done()):
                self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
            return {d for d in domains if d in self.held}

    def release_when_idle(self, domain: str) -> None:
        """The domain has nothing left here: give its lease back if it stays idle IDLE_HOLD s."""
        self._later("release", domain, IDLE_HOLD, self._release_if_idle)

    def closing(self) -> None:
        """Shutdown has begun: no more timers, renewals stop."""
        self._closed = True

    async def wait_releasing(self, grace: float) -> None:
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=grace)

    async def close(self, *, give_back: bool) -> None:
        """Stop the timers and renewals; ``give_back`` when every outcome is written (another
        worker may go on at once), else the leases expire."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await stop_task(self._renewer)
        if give_back:
            await self.release(list(self.held))

    async def release(self, domains: list[str]) -> None:
        """Give idle domains' leases back, so another worker can take them at once."""
        async with self._lock:
            gone = [d for d in domains if d in self.held and (self._closed or self._is_idle(d))]
            for domain in gone:
                self.held.pop(domain)
            # The document stays, ended: the sweep's record of a domain nobody holds, whose
            # retries fall due with no lane on them (sweep.py).
            now = datetime.now(UTC)
            try:
                for part in chunked(gone):
                    await self.db.domain_leases.update_many(
                        {"_id": {"$in": part}, "token": self.token}, {"$set": {"until": now}}
                    )
            except Exception:
                log.exception("giving domain leases back failed", n=len(gone))  # they expire

    async def _take(self, domain: str, now: datetime, until: datetime) -> None:
        """Ours, or free (never taken, expired, given back): take it. Held by another worker:
        the upsert's insert collides on ``_id`` (a duplicate key)."""
        await self.db.domain_leases.update_one(
            {"_id": domain, "$or": [{"token": self.token}, {"until": {"$lt": now}}]},
            {"$set": {"token": self.token, "until": until, "taken_at": now}},
            upsert=True,
        )

    async def _renew_loop(self) -> None:
        every = max(0.2, self.lease.total_seconds() / 4)
        while self.held and not self._closed:
            await asyncio.sleep(every)
            try:
                await self._renew()
            except Exception:
                log.exception("renewing domain leases failed")

    async def _renew(self) -> None:
        async with self._lock:
            domains = list(self.held)
            if not domains:
                return
            now = datetime.now(UTC)
            until = now + self.lease
            kept: set[str] = set()
            for part in chunked(domains):
                result = await self.db.domain_leases.update_many(
                    {"_id": {"$in": part}, "token": self.token}, {"$set": {"until": until}}
                )
                if result.matched_count == len(part):
                    kept.update(part)
                else:
                    kept.update(
                        d["_id"]
                        for d in await self.db.domain_leases.find(
                            {"_id": {"$in": part}, "token": self.token}, {"_id": 1}
                        ).to_list()
                    )
            for domain in domains:
                lease = self.held[domain]
                if domain in kept:
                    lease.until = until
                else:  # taken over (we were too slow): lanes stop starting transactions
                    log.warning("domain lease lost", domain=domain)
                    lease.until = now
                    self.held.pop(domain)
                    # Ask again when the new holder's lease may end: what the lanes give back
                    # now must not wait for a job or the sweep if that holder goes away.
                    self._later("retry", domain, HELD_RETRY, self._retry)

    def _later(self, kind: str, domain: str, delay: float, callback: Callable[[str], None]) -> None:
        if self._closed or (kind, domain) in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop((kind, domain), None)
            callback(domain)

        self._timers[(kind, domain)] = loop.call_later(delay, fire)

    def _retry(self, domain: str) -> None:
        if not self._closed:
            self._wake(domain)

    def _release_if_idle(self, domain: str) -> None:
        if domain in self.held and self._is_idle(domain):
            task = asyncio.get_running_loop().create_task(self.release([domain]))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
