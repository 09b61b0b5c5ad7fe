"""Pull rounds: the lanes' requests for more due recipients, served together from MongoDB.

A lane asks for up to ``limit`` more of its domain's due recipients (``pull``). Requests that
arrive while a round is being read wait and go in the next one: one round takes the leases of
the domains not held yet (leases.py), reads their due recipients (new ones first, each domain
its fair share, then retries and lost per-recipient leases), prepares them (prepare.py) and
hands them to the lanes a chunk at a time. From the hand-over until the outcome is committed a
recipient is "in flight": a pull sees it as still due, so it is left out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from bson import ObjectId

from app.batching import Batcher, Waiter
from app.services.delivery.leases import DomainLeases
from app.services.delivery.outbox import DomainLease, Work, chunked, is_due
from app.services.delivery.parcels import members
from app.services.delivery.prepare import MessagePreparer

log = structlog.get_logger(__name__)

LEASE_BATCH = 500  # lane pulls folded into one round
LEASE_MAX = 5000  # recipients handed out per round (each domain at least LEASE_MAX // domains)
PREPARE_CHUNK = 50  # recipients prepared (read, signed) and handed to lanes at a time
MAX_IN_FLIGHT = 6000  # recipients handed out and not yet recorded, per process
# A domain's queued recipients are read up to the end of a window (``PullRounds._queued``):
# the newest ``next_attempt_at`` read so far plus a span sized from what the last one held.
WINDOW_START = timedelta(seconds=30)
WINDOW_MIN = timedelta(seconds=1)
WINDOW_MAX = timedelta(days=1)
# A domain's rounds read its queued recipients from the newest one handed out (``_Cursor``), not
# from the oldest, which are mostly in flight; from further back only for mail whose
# transaction committed after the domain's last read (its ``next_attempt_at`` is at most
# LATE_COMMIT older than its commit); and from the oldest at least every OLDEST_READ_EVERY,
# for anything further behind (given back with an old time).
LATE_COMMIT = timedelta(seconds=2)
OLDEST_READ_EVERY = timedelta(seconds=30)


@dataclass
class _Cursor:
    """Where a domain's reads of queued recipients start: ``handed``, the newest
    ``next_attempt_at`` handed out or read ahead (``PullRounds._ahead``); ``read``, the round
    that last read them (``_read_from``); ``oldest_read``, the round that last read from the
    oldest."""

    handed: datetime
    read: datetime
    oldest_read: datetime


@dataclass(frozen=True)
class _Pull:
    """A lane asks for up to ``limit`` more due recipients of ``domain``."""

    domain: str
    limit: int


class PullRounds:
    """Serves the lanes' pulls. ``hand_to(work)`` gives a prepared recipient to its lane;
    ``lane_busy(domain)`` says whether a lane still runs for the domain (then the lane, not a
    settled outcome, says when the domain is idle)."""

    def __init__(
        self,
        *,
        db: Any,
        leases: DomainLeases,
        preparer: MessagePreparer,
        hand_to: Callable[[Work], None],
        lane_busy: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.leases = leases
        self.preparer = preparer
        self._hand_to = hand_to
        self._lane_busy = lane_busy
        # Pulls asked while a round runs are folded into the next round (app.batching).
        self._rounds: Batcher[_Pull, bool] = Batcher(self._serve, max_items=LEASE_BATCH)
        # Recipients handed to lanes whose outcome is not committed yet: a pull sees them as
        # still due, so they are left out; so are those settled while a round was reading.
        self._in_flight: dict[ObjectId, tuple[str, datetime]] = {}  # (domain, next_attempt_at)
        # per domain with recipients in flight: how many at each next_attempt_at
        self._times_in_flight: dict[str, Counter[datetime]] = {}
        self._cursors: dict[str, _Cursor] = {}
        # Per domain: campaign parcel members a round read and did not hand out, oldest first,
        # for the next rounds, with the lease they were read under (``_keep_ahead``).
        self._ahead: dict[str, tuple[DomainLease, list[dict[str, Any]]]] = {}
        self._settled_in_round: set[ObjectId] | None = None
        self._round_domains: set[str] = set()
        # Per domain: (the newest next_attempt_at read, the span read beyond it); _queued.
        self._windows: dict[str, tuple[datetime, timedelta]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    async def pull(self, domain: str, limit: int) -> bool:
        """A lane asks for more of its domain's due recipients (they arrive through
        ``hand_to``); True when there may be more still."""
        if self._closed or limit <= 0:
            return False
        try:
            return await self._rounds.submit(_Pull(domain, limit))
        except Exception:
            log.exception("pulling due recipients failed", domain=domain)
            return False

    def idle(self, domain: str) -> bool:
        """Nothing of ``domain`` is in flight or in the round being read."""
        return domain not in self._times_in_flight and domain not in self._round_domains

    def settled(self, works: list[Work]) -> None:
        """Their outcomes are committed: they are no longer in flight."""
        self._settle_ids([w.id for w in works])

    async def stop(self) -> None:
        """No more rounds; pulls waiting for one get no answer (their lanes are closing)."""
        self._closed = True
        await self._rounds.close()  # a round in progress stops; queued pulls are cancelled

    async def _serve(self, pulls: list[Waiter[_Pull, bool]]) -> None:
        """One round for the pulls queued since the last one."""
        try:
            await self._room.wait()
            await self._lease_requests(pulls)
        except Exception as e:
            log.exception("pulling due recipients failed", n=len(pulls))
            for pull in pulls:
                pull.fail(e)
        finally:  # stopped (close) mid-round: nobody waits for an answer forever
            for pull in pulls:
                pull.answer(False)

    async def _lease_requests(self, batch: list[Waiter[_Pull, bool]]) -> None:
        """One round for every lane that asked for more since the last one: take the leases
        of domains not held yet, read their due recipients, hand them to the lanes."""
        now = datetime.now(UTC)
        pulls: dict[str, int] = {}
        for r in batch:
            pulls[r.item.domain] = max(pulls.get(r.item.domain, 0), r.item.limit)
        self._round_domains = set(pulls)  # not idle (their leases stay) until handed over
        try:
            await self._round(batch, pulls, now)
        finally:
            self._round_domains = set()

    async def _round(
        self, batch: list[Waiter[_Pull, bool]], pulls: dict[str, int], now: datetime
    ) -> None:
        held = await self.leases.hold(list(pulls), now)
        self._forget_windows_not_held()
        mine = {domain: limit for domain, limit in pulls.items() if domain in held}
        leases = {domain: self.leases.held[domain] for domain in mine}  # a lost one: until = now
        due: list[dict[str, Any]] = []
        truncated = False
        if mine:
            self._settled_in_round = set()
            try:
                due, truncated = await self._due(mine, now)
                # Outcomes committed while the round was reading may have been read as due.
                due = [d for d in due if d["_id"] not in self._settled_in_round]
            finally:
                self._settled_in_round = None
            self._mark_in_flight(due)
        found = Counter(d["domain"] for d in due)
        for r in batch:
            # "more": this round could not see everything; the lane should ask again. The
            # lanes have their answer before the hand-over, so sending starts with the first
            # prepared chunk.
            domain = r.item.domain
            r.answer(domain in mine and (truncated or found[domain] >= pulls[domain]))
        if due:
            await self._hand_over(due, leases)

    async def _due(self, pulls: dict[str, int], now: datetime) -> tuple[list[dict[str, Any]], bool]:
        """Due recipients of the asking (held) domains, at most each one's limit and LEASE_MAX
        in all: new ones first (each domain its fair share, queried side by side), then
        retries (one query for all domains). Every query
        is an equality prefix of the lane index (domain, status, next_attempt_at). Recipients
        already on their way are skipped. Also says whether the round was cut short (then
        every domain may have more)."""
        share = max(25, LEASE_MAX // len(pulls))
        wanted = {domain: min(limit, share) for domain, limit in pulls.items()}
        # One domain after the other: side by side the queries cost SecantusDB (one thread
        # per connection) more CPU than they save in latency, and a round is rare.
        queued: list[list[dict[str, Any]]] = []
        truncated = False
        for domain, n in wanted.items():
            ahead = self._ahead_of(domain, now)
            if len(ahead) >= n:  # read ahead by an earlier round: enough without a read
                queued.append(ahead)
                truncated = True
                continue
            low = self._read_from(domain, now)
            docs, more = await self._queued(domain, n + self._in_flight_from(domain, low), now, low)
            if (cursor := self._cursors.get(domain)) is not None:
                cursor.read = now
            if ahead:  # older than what the read returned, or among it (the newest parcel)
                kept = {d["_id"] for d in ahead}
                docs = ahead + [d for d in docs if d["_id"] not in kept]
            queued.append(docs)
            truncated = truncated or more
        taken: Counter[str] = Counter()
        out: list[dict[str, Any]] = []
        for d in (d for docs in queued for d in docs):  # each domain's oldest first
            if d["_id"] not in self._in_flight and taken[d["domain"]] < wanted[d["domain"]]:
                if is_due(d, now):
                    taken[d["domain"]] += 1
                    out.append(d)
                    at = d["next_attempt_at"]
                    cursor = self._cursors.setdefault(d["domain"], _Cursor(at, now, now))
                    cursor.handed = max(cursor.handed, at)
        # Not kept ahead: what is handed out or in flight, and what left the flight while the
        # round was reading (its outcome committed: the read may still have returned it)
        gone = {d["_id"] for d in out} | (self._settled_in_round or set())
        for domain, docs in zip(wanted, queued, strict=True):
            left = [d for d in docs if d["_id"] not in gone and d["_id"] not in self._in_flight]
            self._keep_ahead(domain, left, now)
        domains = list(pulls)
        busy = sum(self._in_flight_from(d, None) for d in domains)
        # (A recipient an older release left ``sending`` under a lease of its own is given
        # back to queued or deferred by the sweep once that lease lapses: sweep.py.)
        room = LEASE_MAX - len(out)
        if room <= 0:
            truncated = True
        else:
            docs = (
                await self.db.recipients.find(
                    {
                        "delivery_status": "deferred",
                        "domain": {"$in": domains},
                        "next_attempt_at": {"$lte": now},
                    }
                )
                .limit(room * 2 + busy)
                .to_list()
            )
            truncated = truncated or len(docs) >= room * 2 + busy
            for d in docs:
                if (
                    len(out) < LEASE_MAX
                    and d["_id"] not in self._in_flight
                    and taken[d["domain"]] < pulls[d["domain"]]
                    and is_due(d, now)
                ):
                    taken[d["domain"]] += 1
                    out.append(d)
        return out, truncated or len(out) >= LEASE_MAX

    def _keep_ahead(self, domain: str, left: list[dict[str, Any]], now: datetime) -> None:
        """What a round read of ``domain`` and neither handed out nor has in flight (``left``,
        oldest first), kept for the next rounds when it is all members of campaign parcels,
        due: the cursor moves past them (``_Cursor.handed``), so the next read starts at the
        newest of them, not again at the oldest. Each of those rounds takes from them first,
        and reads only when they are fewer than it wants, while the lease they were read under
        holds (``_ahead_of``). Only parcel members: nobody but the lease's holder changes a parcel
        (a queued row can be canceled meanwhile, and would be sent from here). Anything else
        left (a row, one not due yet) and nothing is kept: the next read starts at the newest
        handed out, and returns it again."""
        if not left or not all("parcel_id" in d and is_due(d, now) for d in left):
            return
        lease = self.leases.held.get(domain)
        if lease is None:
            return
        self._ahead[domain] = (lease, left)
        newest = max(d["next_attempt_at"] for d in left)
        cursor = self._cursors.setdefault(domain, _Cursor(newest, now, now))
        cursor.handed = max(cursor.handed, newest)

    def _ahead_of(self, domain: str, now: datetime) -> list[dict[str, Any]]:
        """What an earlier round read ahead for ``domain`` (``_keep_ahead``), taken out, if
        the lease it was read under still holds: the same lease (not given back and taken
        again since, when another worker may have sent them) and not ended (so nobody else
        can have taken the domain meanwhile). Otherwise nothing, and the cursor that counted
        them goes too (the next read starts from the oldest)."""
        kept = self._ahead.pop(domain, None)
        if kept is None:
            return []
        lease, docs = kept
        if self.leases.held.get(domain) is lease and now < lease.until:
            return docs
        self._cursors.pop(domain, None)
        return []

    def _forget_windows_not_held(self) -> None:
        """A domain's window serves this process while it holds the domain's lease: once there
        are more windows than held leases, those of domains given back are dropped (a domain
        taken again starts with one full read, as a new one does; a window kept meanwhile is
        only a first guess). So a long-running worker keeps at most about one window per held
        lease, not one per domain it ever delivered to."""
        held = self.leases.held
        if len(self._windows) > len(held):
            self._windows = {d: w for d, w in self._windows.items() if d in held}
        if len(self._cursors) > len(held):
            self._cursors = {d: c for d, c in self._cursors.items() if d in held}
        for domain in [d for d in self._ahead if d not in held]:
            del self._ahead[domain]  # read again from the oldest, as a new lease is
            self._cursors.pop(domain, None)  # it counted them

    def _read_from(self, domain: str, now: datetime) -> datetime | None:
        """Where this round reads the domain's queued recipients from: None, the oldest (no
        cursor yet, or the last such read was OLDEST_READ_EVERY ago); else the newest one
        handed out, or LATE_COMMIT before the domain's last read if that is older.

        Each round hands out the oldest of what it reads, and its read reaches back to the
        newest handed out before it, so what lies behind the cursor unhanded was committed
        after the last read began (later than the round's ``now``), and its
        ``next_attempt_at`` is at most LATE_COMMIT older than that. With a backlog (the
        cursor far behind the clock) a round reads from the cursor on: the recipients in
        flight behind it are not read again each round, with the MIME of the campaign
        parcels they are in (parcels.py). Mail that breaks the rule (given back with an old
        time, or stamped by a clock more than LATE_COMMIT behind this one) waits at most
        OLDEST_READ_EVERY (or, once the lane is idle and its lease given back, the next
        lease's first read): late, never lost."""
        cursor = self._cursors.get(domain)
        if cursor is None or now - cursor.oldest_read >= OLDEST_READ_EVERY:
            if cursor is not None:
                cursor.oldest_read = now
            return None
        return min(cursor.handed, cursor.read - LATE_COMMIT)

    def _in_flight_from(self, domain: str, low: datetime | None) -> int:
        """How many of the domain's recipients from ``low`` on (None: all) are in flight: a
        read from there returns them too, and the round leaves them out."""
        times = self._times_in_flight.get(domain, Counter[datetime]())
        return sum(n for at, n in times.items() if low is None or at >= low)

    def _mark_in_flight(self, due: list[dict[str, Any]]) -> None:
        """From here until their outcome is committed, nobody pulls them."""
        for d in due:
            domain, at = d["domain"], d["next_attempt_at"]
            self._in_flight[d["_id"]] = (domain, at)
            self._times_in_flight.setdefault(domain, Counter())[at] += 1
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._room.clear()

    async def _queued(
        self, domain: str, limit: int, now: datetime, low: datetime | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """At least ``limit`` of the domain's queued recipients (from ``low`` on, if given) if
        there are that many, the oldest (the in-flight ones among them) first, with whatever
        else the reads returned after them (``_keep_ahead``); and whether there may be more.

        A query for all of them with a limit reads every match on SecantusDB before it stops
        (35 ms at 2,000 queued recipients of a domain, every round), so a round first asks for
        those due by the end of a window: the newest time read so far plus a span sized from
        what the last window held (aiming at 1.5 x limit). Only when the window holds too few
        does it ask for all, as before; the two together see every queued recipient.

        ``now`` (the round's time): a window that reaches it already holds every recipient
        due by then, and the ones beyond it cannot be handed out in this round (``is_due``),
        so with a short queue, where every window holds too few, one query is enough."""
        query: dict[str, Any] = {"domain": domain, "delivery_status": "queued"}
        since: dict[str, Any] = {} if low is None else {"$gte": low}
        window = self._windows.get(domain)
        docs: list[dict[str, Any]] = []
        reaches_now = False
        if window is not None:
            mark, span = window
            reaches_now = mark + span >= now
            docs = members(
                await self.db.recipients.find(
                    {**query, "next_attempt_at": {**since, "$lte": mark + span}}
                )
                .limit(2 * limit)
                .to_list()
            )
            aim = span * (1.5 * limit / max(len(docs), 1))
            self._windows[domain] = (mark, min(WINDOW_MAX, max(WINDOW_MIN, aim)))
            # oldest first (the round hands them out in this order: _Cursor)
            docs = sorted(docs, key=lambda d: d["next_attempt_at"])
        if len(docs) < limit and not reaches_now:  # too few: all of them, oldest first
            docs = await self._oldest(query, since, limit)
        if docs:  # every queued recipient has a next_attempt_at (compose.recipient_docs)
            newest = docs[:limit][-1]["next_attempt_at"]  # the limit's newest: docs are sorted
            first = WINDOW_START
            if len(docs) >= limit:  # a backlog: the span these took, aimed as windows aim
                first = min(
                    WINDOW_START, max(WINDOW_MIN, 1.5 * (newest - docs[0]["next_attempt_at"]))
                )
            mark, span = self._windows.get(domain, (newest, first))
            self._windows[domain] = (max(mark, newest), span)
        return docs, len(docs) >= limit

    async def _oldest(
        self, query: dict[str, Any], since: dict[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        """The oldest ``limit`` of the recipients ``query`` matches from ``since`` on (and the
        rest of the last parcel among them), oldest first, a parcel counted as its members:
        first their times and member ids, oldest first, to find the time by which ``limit``
        are due; then the documents due by then. SecantusDB reads every match to sort them
        either way; what it sends, and this process decodes, is ``limit`` recipients'
        documents, not ``limit`` parcels of dozens each."""
        probe = (
            await self.db.recipients.find(
                {**query, "next_attempt_at": since} if since else query,
                {"next_attempt_at": 1, "parcel._id": 1},
            )
            .sort("next_attempt_at", 1)
            .limit(limit)
            .to_list()
        )
        if not probe:
            return []
        counted, until = 0, probe[-1]["next_attempt_at"]
        for d in probe:
            counted += len(d.get("parcel") or ()) or 1
            if counted >= limit:
                until = d["next_attempt_at"]
                break
        docs = members(
            await self.db.recipients.find({**query, "next_attempt_at": {**since, "$lte": until}})
            .limit(2 * limit)
            .to_list()
        )
        return sorted(docs, key=lambda d: d["next_attempt_at"])

    async def _hand_over(self, docs: list[dict[str, Any]], leases: dict[str, DomainLease]) -> None:
        """Prepare and hand to the lanes a chunk at a time, so sending starts early."""
        for index, part in enumerate(chunked(docs, PREPARE_CHUNK)):
            try:
                works, gone = await self.preparer.prepare(part, leases)
            except Exception:
                # Back to the outbox as they are (still due): the next pull or sweep retries.
                log.exception("preparing messages failed", n=len(docs))
                self._settle_ids([d["_id"] for d in docs[index * PREPARE_CHUNK :]])
                return
            self.settled(gone)
            for work in works:
                self._hand_to(work)

    def _settle_ids(self, ids: list[ObjectId]) -> None:
        domains = set()
        for i in ids:
            flight = self._in_flight.pop(i, None)
            if flight is not None:
                domain, at = flight
                times = self._times_in_flight[domain]
                times[at] -= 1
                if not times[at]:
                    del times[at]
                    if not times:  # the domain's last one in flight
                        del self._times_in_flight[domain]
                        domains.add(domain)
            if self._settled_in_round is not None:
                self._settled_in_round.add(i)
        if len(self._in_flight) < MAX_IN_FLIGHT:
            self._room.set()
        for domain in domains:
            if not self._lane_busy(domain):
                self.leases.release_when_idle(domain)
