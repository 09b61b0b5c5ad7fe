"""Batched send intake (issue 14): check now, store one lean document, materialize later.

The per-send transaction (``send.py``) writes a message, its recipients, events, the Sent
view, thread, counters and change log, and costs tens of milliseconds on the database we run;
an application sending receipts needs thousands a second. Here a send (plain or template) is
checked completely before it is answered — addresses, header injection, sizes, sender
identity, attachments, the template's variables against its schema and the render itself, the
rate limit, the idempotency key — and becomes ONE document in ``send_intake`` holding what the
message will be (the ids of the message and of its Sent item allocated now; the template
version id and the variables, or the bodies). Concurrent callers share one group commit: what
queued while the previous transaction ran is written with one ``insert_many`` (and the
idempotency keys with another) in one transaction, and each caller is answered when it is
durable. The materializer (``materialize.py``) turns accepted sends into ordinary messages.

Nothing is acknowledged before it is durable; nothing accepted is dropped: an intake document
leaves ``send_intake`` only in the transaction that stores its message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction, is_duplicate_key, storage_failure
from app.adapters.queue import JobQueue
from app.batching import Batcher, SharedLookup, Waiter
from app.domain.errors import DomainError, ServiceUnavailable, ValidationError
from app.domain.mime import make_message_id
from app.domain.templates import Rendered
from app.domain.viewer import Viewer
from app.services.sending.compose import Composition, addr_doc
from app.services.sending.send import MAX_IDEMPOTENCY_KEY, SendingService, SendLookups
from app.services.templates.render import TemplateRenderer, Variables, encode_variables
from app.services.templates.sending import TemplateRef

log = structlog.get_logger(__name__)

MAX_SENDS_PER_CALL = 500  # Postmark's batch endpoints take 500 messages a call
MAX_GROUP_COMMIT = 2000  # intake documents in one transaction
MATERIALIZE_JOB = "materialize_sends"
MATERIALIZE_JOB_ID = "materialize-sends"  # one materializer at a time (arq keeps ids unique)


@dataclass(frozen=True)
class SendRequest:
    """One send of a batch: what to send, and the template that fills it (or None)."""

    composition: Composition
    template: TemplateRef | None = None


@dataclass(frozen=True)
class Accepted:
    """A durable accepted send: its message and the sender's Sent item get these ids."""

    message_id: ObjectId
    item_id: ObjectId


_VersionKey = tuple[ObjectId, str, int | None]  # (user, template key, version or None)


@dataclass
class _Pending:
    doc: dict[str, Any]
    key_doc: dict[str, Any] | None


class SendIntake:
    def __init__(
        self,
        mongo: Mongo,
        sending: SendingService,
        renderer: TemplateRenderer,
        queue: JobQueue,
        *,
        hostname: str,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.sending = sending
        self.renderer = renderer
        self.queue = queue
        self.hostname = hostname
        self._batcher: Batcher[_Pending, Accepted] = Batcher(
            self._commit_batch,
            max_items=MAX_GROUP_COMMIT,
            failed=storage_failure("send store", retry_after_seconds=5),
        )
        # Concurrent single sends of one sender share their reads (each answer as fresh as a
        # query of its own): the sender's addresses, the template version.
        self._addresses: SharedLookup[ObjectId, list[str]] = SharedLookup(self._fetch_addresses)
        self._versions: SharedLookup[_VersionKey, dict[str, Any]] = SharedLookup(
            self._fetch_versions
        )

    async def accept(self, viewer: Viewer, request: SendRequest) -> Accepted:
        """Check one send and store it durably (a group commit with concurrent callers)."""
        [result] = await self.accept_many(viewer, [request])
        if isinstance(result, DomainError):
            raise result
        return result

    async def accept_many(
        self, viewer: Viewer, requests: list[SendRequest]
    ) -> list[Accepted | DomainError]:
        """Check and store many sends of one viewer (Postmark's ``batchWithTemplates``): one
        answer per send, in order — its ids, or the error that refused it (the others are
        stored all the same). The sender's addresses, the templates and the idempotency keys
        are read once for the call, and the rate limit is charged once for its recipients."""
        if not 1 <= len(requests) <= MAX_SENDS_PER_CALL:
            raise ValidationError.on("sends", f"1 to {MAX_SENDS_PER_CALL} sends a call")
        now = datetime.now(UTC)
        results: list[Accepted | DomainError | None] = [None] * len(requests)
        earlier = await self._earlier(viewer, [r.composition.idempotency_key for r in requests])
        lookups = SendLookups(
            owned=(await self._addresses.get([viewer.user_id])).get(viewer.user_id, [])
        )
        pending: list[tuple[int, _Pending, int]] = []  # (position, document, recipients)
        keys_seen: dict[str, int] = {}
        todo = [
            (n, r)
            for n, r in enumerate(requests)
            if r.composition.idempotency_key is None or r.composition.idempotency_key not in earlier
        ]
        for n, r in enumerate(requests):
            if (
                r.composition.idempotency_key is not None
                and r.composition.idempotency_key in earlier
            ):
                results[n] = earlier[r.composition.idempotency_key]
        prepared_all = await self._prepare_all(viewer, [r for _, r in todo], now, lookups)
        for (n, request), outcome in zip(todo, prepared_all, strict=True):
            if isinstance(outcome, DomainError):
                results[n] = outcome
                continue
            prepared, cost = outcome
            key = request.composition.idempotency_key
            if key is not None and key in keys_seen:  # the same key twice in one call
                results[n] = ValidationError.on(
                    "idempotencyKey", f"the same key as send {keys_seen[key]} of this call"
                )
                continue
            if key is not None:
                keys_seen[key] = n
            pending.append((n, prepared, cost))
        if pending:
            try:
                await self.sending.charge_send_limit(viewer, sum(cost for _, _, cost in pending))
            except DomainError as e:
                for n, _, _ in pending:
                    results[n] = e
                pending = []
        if pending:
            stored = await _gather_answers(self._batcher, [p for _, p, _ in pending])
            for (n, _, _), answer in zip(pending, stored, strict=True):
                results[n] = answer
            await self.queue.enqueue(MATERIALIZE_JOB, job_id=MATERIALIZE_JOB_ID)
        return [r for r in results if r is not None]

    async def _prepare_all(
        self, viewer: Viewer, requests: list[SendRequest], now: datetime, lookups: SendLookups
    ) -> list[tuple[_Pending, int] | DomainError]:
        """Each send checked and made into its intake document with its recipient count, or
        the error that refuses it. The template sends are rendered together (one hand-off to
        the render threads per chunk, not one per send)."""
        out: list[tuple[_Pending, int] | DomainError | None] = [None] * len(requests)
        versions: dict[tuple[str, int | None], dict[str, Any]] = {}
        to_render: list[tuple[int, dict[str, Any], Variables]] = []  # (position, version, …)
        for n, request in enumerate(requests):
            try:
                _precheck(request)
                if request.template is not None:
                    variables = encode_variables(request.template.variables)
                    version = await self._version(viewer, request.template, versions)
                    to_render.append((n, version, variables))
            except DomainError as e:
                out[n] = e
        rendered = await self.renderer.render_versions([(v, x) for _, v, x in to_render])
        renders = {
            n: (version, variables, answer)
            for (n, version, variables), answer in zip(to_render, rendered, strict=True)
        }
        for n, request in enumerate(requests):
            if out[n] is not None:
                continue
            try:
                out[n] = await self._prepare(viewer, request, now, lookups, renders.get(n))
            except DomainError as e:
                out[n] = e
        return [o for o in out if o is not None]

    async def _version(
        self,
        viewer: Viewer,
        ref: TemplateRef,
        versions: dict[tuple[str, int | None], dict[str, Any]],
    ) -> dict[str, Any]:
        """The version a template send names, read once per call (and shared with concurrent
        single sends); the store's error when there is none."""
        version = versions.get((ref.key, ref.version))
        if version is None:
            found = await self._versions.get([(viewer.user_id, ref.key, ref.version)])
            version = found.get((viewer.user_id, ref.key, ref.version))
            if version is None:  # the store says why (no template, no published version)
                _, version = await self.renderer.store.version(viewer, ref.key, ref.version)
            versions[(ref.key, ref.version)] = version
        return version

    async def _prepare(
        self,
        viewer: Viewer,
        request: SendRequest,
        now: datetime,
        lookups: SendLookups,
        render: tuple[dict[str, Any], Variables, Rendered | ValidationError] | None,
    ) -> tuple[_Pending, int]:
        c = request.composition
        content: dict[str, Any]
        filled = c
        if render is not None:  # a template send (its version, variables, and render)
            version, variables, rendered = render
            if isinstance(rendered, ValidationError):
                raise rendered
            # rendered now so that a bad variable or a failing template is the caller's error;
            # the materializer renders the same immutable version again from the variables
            filled = dataclasses.replace(
                c,
                subject=c.subject or rendered.subject,
                text=rendered.text_part(),
                html=rendered.html,
            )
            content = {
                "template": {
                    "version_id": version["_id"],
                    "variables": variables.json,
                },
                "subject": c.subject or None,
            }
        else:
            content = {"text": c.text, "html": c.html, "subject": c.subject or ""}
        checked = await self.sending.check_send(viewer, filled, now, lookups=lookups)
        message_id, item_id = ObjectId(), ObjectId()
        doc = {
            "_id": message_id,
            "user_id": viewer.user_id,
            "item_id": item_id,
            "rfc822_message_id": make_message_id(self.hostname),
            "accepted_at": now,
            "from": addr_doc(checked.sender),
            "to": [addr_doc(a) for a in checked.recipients.to],
            "cc": [addr_doc(a) for a in checked.recipients.cc],
            "bcc": [addr_doc(a) for a in checked.recipients.bcc],
            **content,
            "attachment_ids": [a["_id"] for a in checked.uploads],
            "transactional": c.transactional,
            "send_at": checked.send_at,
            "parent_message_id": checked.parent_msg["_id"] if checked.parent_msg else None,
            "attempts": 0,
        }
        key_doc = (
            {
                "_id": f"{viewer.user_id}:{c.idempotency_key}",
                "item_id": item_id,
                "message_id": message_id,
                "created_at": now,
            }
            if c.idempotency_key
            else None
        )
        return _Pending(doc, key_doc), len(checked.recipients.everyone)

    async def _fetch_addresses(self, user_ids: list[ObjectId]) -> dict[ObjectId, list[str]]:
        return {u: await self.sending.accounts.addresses_of(u) for u in user_ids}

    async def _fetch_versions(self, wanted: list[_VersionKey]) -> dict[_VersionKey, dict[str, Any]]:
        found = {}
        for user_id, key, number in wanted:
            try:
                _, found[(user_id, key, number)] = await self.renderer.store.version(
                    Viewer(user_id, ""), key, number
                )
            except DomainError:
                continue  # left out: the caller asks the store again for the error
        return found

    async def _earlier(self, viewer: Viewer, keys: list[str | None]) -> dict[str, Accepted]:
        """What earlier sends answered for these idempotency keys (one query)."""
        wanted = {f"{viewer.user_id}:{k}": k for k in keys if k}
        if not wanted:
            return {}
        found: dict[str, Accepted] = {}
        for doc in await self.db.idempotency_keys.find({"_id": {"$in": list(wanted)}}).to_list():
            message_id = doc.get("message_id")
            if message_id is None:  # stored by the per-send path: its Sent item names it
                item = await self.db.mailbox_items.find_one(
                    {"_id": doc["item_id"], "user_id": viewer.user_id}, {"message_id": 1}
                )
                if item is None:
                    continue
                message_id = item["message_id"]
            found[wanted[doc["_id"]]] = Accepted(message_id, doc["item_id"])
        return found

    async def _commit_batch(self, waiters: list[Waiter[_Pending, Accepted]]) -> None:
        items = [w.item for w in waiters]
        try:
            await self._write(items)
        except Exception as e:
            if not is_duplicate_key(e):
                raise
            # an idempotency key taken meanwhile (another call or process): one at a time, so
            # only that send answers with the earlier one's ids
            for waiter in waiters:
                try:
                    await self._write([waiter.item])
                except Exception as one:
                    if not is_duplicate_key(one) or waiter.item.key_doc is None:
                        raise
                    earlier = await self.db.idempotency_keys.find_one(
                        {"_id": waiter.item.key_doc["_id"]}
                    )
                    if earlier is None or "message_id" not in earlier:
                        waiter.fail(
                            ServiceUnavailable(
                                "a send with this idempotency key is in progress; retry",
                                retry_after_seconds=1,
                            )
                        )
                        continue
                    waiter.answer(Accepted(earlier["message_id"], earlier["item_id"]))
                    continue
                waiter.answer(_accepted(waiter.item))
            return
        for waiter in waiters:
            waiter.answer(_accepted(waiter.item))  # durable: the caller may say "accepted"

    async def _write(self, items: list[_Pending]) -> None:
        docs = [p.doc for p in items]
        key_docs = [p.key_doc for p in items if p.key_doc is not None]

        async def work(session: Any) -> None:
            await self.db.send_intake.insert_many(docs, session=session)
            if key_docs:
                await self.db.idempotency_keys.insert_many(key_docs, session=session)

        await in_transaction(self.mongo, work)


def _precheck(request: SendRequest) -> None:
    """What a send's own fields can be refused for before anything is read or rendered."""
    c = request.composition
    if c.idempotency_key is not None and not 1 <= len(c.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError.on("idempotencyKey", f"1 to {MAX_IDEMPOTENCY_KEY} characters")
    if request.template is not None:
        for name, value in (("text", c.text), ("html", c.html)):
            if value is not None:
                raise ValidationError.on(name, f"give {name} or a template, not both")


def _accepted(pending: _Pending) -> Accepted:
    return Accepted(pending.doc["_id"], pending.doc["item_id"])


async def _gather_answers(
    batcher: Batcher[_Pending, Accepted], items: list[_Pending]
) -> list[Accepted | DomainError]:
    """Submit every item (they land in one group commit) and collect each answer."""
    answers = await batcher.submit_many(items)
    out: list[Accepted | DomainError] = []
    for answer in answers:
        if isinstance(answer, Accepted | DomainError):
            out.append(answer)
        elif isinstance(answer, BaseException):
            raise answer
    return out
