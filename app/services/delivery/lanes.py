"""Per-destination lanes: where leased recipients wait for an SMTP session to their domain.

One lane per recipient domain (Postfix's per-destination queue). A lane runs up to
``domain_concurrency`` senders across all worker processes (a Redis semaphore); each sender
holds one session and sends the lane's recipients through it one VERP transaction after another,
so a domain's recipients share a connection and the connection outlives the message. When a
lane's backlog runs low it pulls more of its domain's due recipients from MongoDB itself, so
a deep queue for one domain does not cost one job round trip per message.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from app.adapters import metrics
from app.adapters.dns_resolver import DnsResolver, LookupStatus
from app.adapters.smtp_transport import (
    ConnectFailed,
    Envelope,
    SmtpSession,
    SmtpTransport,
    no_reply,
)
from app.adapters.throttle import DomainThrottle
from app.domain.bounces import NO_REPLY, SmtpOutcome
from app.domain.verp import make_verp_address
from app.services.delivery.outbox import Work
from app.services.delivery.outcomes import OutcomeRecorder

log = structlog.get_logger(__name__)

LANE_HIGH = 100  # recipients a lane fetches ahead of its senders
LANE_LOW = 25  # below this a lane pulls more of its domain's due recipients
SPAWN_BACKLOG = 20  # another sender when each has more than this waiting
MAX_SENDERS = 100  # SMTP sessions per worker process (Postfix's default_process_limit)
LINGER = 0.25  # seconds an idle sender keeps its session for more of its domain's mail
ROUTE_TTL = 60.0  # seconds an MX answer is reused
THROTTLE_RETRY = 5.0  # seconds before a throttled recipient is tried again
MX_ADDRESS_LIMIT = 5  # addresses tried per attempt (Postfix's smtp_mx_address_limit)


@dataclass(frozen=True)
class Route:
    """Where a domain's mail goes: (host, addresses) in preference order, or why nowhere."""

    hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    failure: SmtpOutcome | None = None


@dataclass
class Lane:
    domain: str
    queue: deque[Work] = field(default_factory=deque)
    senders: int = 0
    wants_pull: bool = True  # a new lane looks for the rest of its domain's backlog once
    pulling: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Lanes:
    def __init__(
        self,
        *,
        transport: SmtpTransport,
        resolver: DnsResolver,
        throttle: DomainThrottle,
        recorder: OutcomeRecorder,
        secret: bytes,
        relay_host: str | None,
        lease_margin: timedelta,
        pull: Callable[[str, int], Awaitable[bool]],
        on_idle: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.resolver = resolver
        self.throttle = throttle
        self.recorder = recorder
        self.secret = secret
        self.relay_host = relay_host
        self.lease_margin = lease_margin
        self.pull = pull  # (domain, limit) -> leases more (put() here); True if more remain
        self.on_idle = on_idle  # (domain) -> called when a lane has nothing left and ends
        self.lanes: dict[str, Lane] = {}
        self.senders = 0
        self.closing = False
        self._routes: dict[str, tuple[float, Route]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lane(self, domain: str) -> Lane:
        lane = self.lanes.get(domain)
        if lane is None:
            lane = self.lanes[domain] = Lane(domain)
        return lane

    def note_waiting(self, domain: str) -> None:
        """More of ``domain`` is due: its lane (started if need be) pulls it from MongoDB."""
        lane = self.lane(domain)
        lane.wants_pull = True
        lane.wake.set()
        self._maybe_spawn(lane)

    def put(self, work: Work) -> None:
        lane = self.lane(work.domain)
        lane.queue.append(work)
        lane.wake.set()
        self._maybe_spawn(lane)

    def _maybe_spawn(self, lane: Lane) -> None:
        if self.closing or not (lane.queue or lane.wants_pull):
            return
        wanted = lane.senders == 0 or (
            len(lane.queue) > SPAWN_BACKLOG * lane.senders
            and lane.senders < self.throttle.concurrency
        )
        if wanted and (self.senders < MAX_SENDERS or lane.senders == 0):
            lane.senders += 1
            self.senders += 1
            task = asyncio.get_running_loop().create_task(self._sender(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def backlog(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes.values())

    async def close(self, grace: float) -> None:
        """Stop: senders finish the transaction they are in and give everything else back."""
        self.closing = True
        for lane in self.lanes.values():
            lane.wake.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for lane in self.lanes.values():  # nobody left to send these: back to the outbox
            self._release_all(lane, datetime.now(UTC))
        await self.transport.close()

    # --- one sender ------------------------------------------------------------------------

    async def _sender(self, lane: Lane) -> None:
        session: SmtpSession | None = None
        slot = None
        try:
            slot = await self.throttle.acquire(lane.domain)
            if slot is None:
                if lane.senders == 1:  # every slot is held by other processes: hold back
                    self._release_all(lane, datetime.now(UTC) + _jittered(THROTTLE_RETRY))
                return
            route: Route | None = None
            renewed = time.monotonic()
            while not self.closing:
                if len(lane.queue) < LANE_LOW and lane.wants_pull and not lane.pulling:
                    if lane.queue:  # keep sending while the next batch is fetched
                        asyncio.get_running_loop().create_task(self._refill(lane))
                    else:
                        await self._refill(lane)
                chunk = self._take(lane, 20)
                if not chunk:
                    lane.wake.clear()
                    try:
                        await asyncio.wait_for(lane.wake.wait(), LINGER)
                    except TimeoutError:
                        break
                    continue
                if route is None:
                    route = await self._route(lane.domain)
                if route.failure is not None:  # NXDOMAIN, null MX, DNS trouble: all alike
                    metrics.route_failure()
                    for work in chunk:
                        self.recorder.attempted(work, route.failure, None)
                    self._fail_all(lane, route.failure)
                    continue
                while self.recorder.crowded and not self.closing:
                    await self.recorder.room()  # outcomes first: keep the duplicate window short
                wait = await self.throttle.take_rate(lane.domain, len(chunk))
                if wait:
                    lane.queue.extendleft(reversed(chunk))
                    self._release_all(lane, datetime.now(UTC) + _jittered(wait))
                    break
                session = await self._send_chunk(lane, route, chunk, session)
                if time.monotonic() - renewed > self.throttle.slot_ttl / 3:
                    await self.throttle.renew(slot)
                    renewed = time.monotonic()
        except Exception:
            log.exception("delivery lane failed", domain=lane.domain)
            self._release_all(lane, datetime.now(UTC) + _jittered(THROTTLE_RETRY))
        finally:
            if session is not None:
                self.transport.release(session)
            if slot is not None:
                await self.throttle.release(slot)
            lane.senders -= 1
            self.senders -= 1
            if self.closing:
                self._release_all(lane, datetime.now(UTC))
            else:
                self._maybe_spawn(lane)  # work (or a pull request) arrived while we wound down
                if lane.senders == 0 and not lane.queue and not lane.wants_pull:
                    self.lanes.pop(lane.domain, None)
                    if self.on_idle is not None:
                        self.on_idle(lane.domain)

    async def _refill(self, lane: Lane) -> None:
        if not lane.wants_pull or lane.pulling or self.closing:
            return
        lane.pulling, lane.wants_pull = True, False
        try:
            # The work arrives through put(); the answer says whether to ask again. A note
            # (note_waiting) that came while the round was reading stands: that round may have
            # read before the new mail was committed, and its "nothing more" would otherwise
            # leave the mail to the sweep, a minute later.
            more = await self.pull(lane.domain, LANE_HIGH - len(lane.queue))
            lane.wants_pull = lane.wants_pull or more
        finally:
            lane.pulling = False

    @staticmethod
    def _take(lane: Lane, n: int) -> list[Work]:
        out: list[Work] = []
        while lane.queue and len(out) < n:
            out.append(lane.queue.popleft())
        return out

    async def _send_chunk(
        self, lane: Lane, route: Route, chunk: list[Work], session: SmtpSession | None
    ) -> SmtpSession | None:
        for index, work in enumerate(chunk):
            now = datetime.now(UTC)
            if self.closing or work.lease_until - now < self.lease_margin:
                # Not enough lease left to finish a transaction safely: let someone re-lease it.
                self.recorder.release(work, now)
                continue
            envelope = Envelope(self._verp(work), (work.address,), work.message.data)
            for _ in range(2):
                if session is None:
                    try:
                        session = await self._connect(route)
                    except ConnectFailed as e:
                        metrics.outbound_reply(
                            e.outcome.code if e.outcome.code != NO_REPLY else None
                        )
                        # Every MX failed: the rest of this lane would fail the same way now.
                        for rest in chunk[index:]:
                            self.recorder.attempted(rest, e.outcome, None)
                        self._fail_all(lane, e.outcome)
                        return None
                reused, host = session.transactions > 0, session.host
                started = time.monotonic()
                try:
                    result = await session.send(envelope)
                except BaseException:
                    # Unexpected (a bug, or cancelled): this and the rest of the chunk go back
                    # to the outbox, due again soon, instead of being forgotten mid-flight.
                    retry = datetime.now(UTC) + _jittered(THROTTLE_RETRY)
                    for rest in chunk[index:]:
                        self.recorder.release(rest, retry)
                    raise
                if result.broken:
                    self.transport.release(session)
                    session = None
                    if result.retryable and reused:
                        continue  # a pooled session the server had closed: nothing was sent
                reply = result.replies[work.address]
                metrics.outbound_reply(
                    reply.code if reply.code != NO_REPLY else None, time.monotonic() - started
                )
                self.recorder.attempted(work, reply, host)
                break
        return session

    def _verp(self, work: Work) -> str:
        return make_verp_address(
            domain=work.message.sender_domain,
            message_id=str(work.message.id),
            recipient_id=str(work.id),
            secret=self.secret,
        )

    async def _connect(self, route: Route) -> SmtpSession:
        last = no_reply("no mail exchanger address to connect to")
        tried = 0
        for host, addresses in route.hosts:
            for address in addresses:
                if tried >= MX_ADDRESS_LIMIT:
                    raise ConnectFailed(last)
                tried += 1
                try:
                    return await self.transport.session(host, address)
                except ConnectFailed as e:
                    last = e.outcome
        raise ConnectFailed(last)

    async def _route(self, domain: str) -> Route:
        if self.relay_host:
            return Route(((self.relay_host, (self.relay_host,)),))
        cached = self._routes.get(domain)
        if cached and time.monotonic() - cached[0] < ROUTE_TTL:
            return cached[1]
        route = await self._resolve(domain)
        if route.failure is None or route.failure.code >= 500:
            self._routes[domain] = (time.monotonic(), route)
        return route

    async def _resolve(self, domain: str) -> Route:
        mx = await self.resolver.mx(domain)
        if mx.status is LookupStatus.NXDOMAIN:
            # RFC 3463 5.1.2: bad destination system address. Decided here, not by a server.
            return Route(
                failure=SmtpOutcome(
                    550,
                    "5.1.2",
                    f"{domain}: domain does not exist (DNS NXDOMAIN, determined locally)",
                )
            )
        if mx.null_mx:
            # RFC 7505 §4.2: a null MX means the domain accepts no mail at all.
            return Route(
                failure=SmtpOutcome(556, "5.1.10", f"{domain} does not accept mail (null MX)")
            )
        if mx.status is LookupStatus.NO_DATA:
            return Route(
                failure=SmtpOutcome(
                    550, "5.1.2", f"{domain} has no MX or address records (determined locally)"
                )
            )
        if mx.status is not LookupStatus.OK:
            return Route(failure=no_reply(f"DNS lookup of {domain} failed temporarily"))
        hosts = []
        for host in mx.hosts:
            addresses = await self.resolver.addresses(host)
            if addresses:
                hosts.append((host, tuple(addresses)))
        if not hosts:
            return Route(failure=no_reply(f"no address for the mail exchangers of {domain}"))
        return Route(tuple(hosts))

    def _fail_all(self, lane: Lane, outcome: SmtpOutcome) -> None:
        while lane.queue:
            self.recorder.attempted(lane.queue.popleft(), outcome, None)

    def _release_all(self, lane: Lane, due: datetime) -> None:
        while lane.queue:
            self.recorder.release(lane.queue.popleft(), due)


def _jittered(seconds: float) -> timedelta:
    return timedelta(seconds=seconds * random.uniform(1.0, 1.5))
