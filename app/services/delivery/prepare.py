"""Preparing outbound mail for the lanes: the raw MIME from the blob store (or from the row
itself, for campaign mail to remote addresses), DKIM-signed once.

A message going to several domains (or retried) is read and signed once and kept in a small
cache; each sender domain's DKIM key is cached for KEY_TTL seconds. Suppression is read from
MongoDB right before the attempt (DESIGN.md §6): an address suppressed after the send was
accepted is not mailed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.blob_batches import read_blobs
from app.adapters.dkim_signer import DkimKey, DkimSigner
from app.adapters.live_status import publish_many
from app.adapters.mongo import UpdateOne
from app.adapters.redis_store import RedisStore
from app.adapters.smtp_transport import no_reply
from app.domain.addresses import domain_of
from app.domain.outcomes import status_event
from app.services.delivery.outbox import DomainLease, PreparedMessage, Work, chunked
from app.services.delivery.outcomes import OutcomeRecorder
from app.services.feedback.suppression import GLOBAL, SuppressionService, user_scope

PREPARED_CACHE = 512  # signed messages kept for their other domains and retries
KEY_TTL = 60.0  # seconds a domain's DKIM key is cached
_GONE = PreparedMessage(ObjectId(b"\0" * 12), {}, b"", b"", "")  # a deleted message's placeholder
# what a row that carries its own MIME gives its PreparedMessage's ``doc`` (the rest of a
# message document the lanes, the outcome writer and the retry policy read is absent there)
CARRIED_FIELDS = ("from", "sender_user_id", "campaign_id", "bulk")
_MESSAGE_FIELDS = {"text_body": 0, "html_body": 0, "bcc": 0, "attachments": 0, "headers": 0}


class MessagePreparer:
    def __init__(
        self,
        *,
        db: Any,
        redis: RedisStore,
        suppression: SuppressionService,
        signer: DkimSigner,
        recorder: OutcomeRecorder,
    ) -> None:
        self.db = db
        self.redis = redis
        self.suppression = suppression
        self.signer = signer
        self.recorder = recorder
        self._prepared: OrderedDict[ObjectId, PreparedMessage] = OrderedDict()
        self._keys: dict[str, tuple[float, DkimKey | None]] = {}

    async def prepare(
        self, docs: list[dict[str, Any]], leases: dict[str, DomainLease]
    ) -> tuple[list[Work], list[Work]]:
        """The recipients ready for a lane, and those whose message was deleted (canceled
        here; the caller settles them). Suppressed recipients and messages whose content is
        unavailable go straight to the recorder."""
        prepared = await self._prepared_messages(
            {d["message_id"] for d in docs if d.get("raw") is None}
        )
        prepared.update(await self._carried_messages([d for d in docs if d.get("raw") is not None]))
        # (a user's own entries stop only that user's mail: app/services/feedback/suppression.py)
        senders = {m.id: user_scope(m.sender_user_id) for m in prepared.values()}
        suppressed: set[tuple[str, str]] = set()
        for part in chunked([d["address"] for d in docs]):
            suppressed |= await self.suppression.suppressed_in_scopes(
                part, sorted(set(senders.values()))
            )
        ready: list[Work] = []
        gone: list[Work] = []
        for doc in docs:
            lease = leases[doc["domain"]]
            message = prepared.get(doc["message_id"])
            if message is None:
                message = await self._placeholder(doc["message_id"])
                if message is None:  # the message itself was deleted: nothing to deliver
                    gone.append(Work(doc, _GONE, lease))
                    continue
                self.recorder.attempted(
                    Work(doc, message, lease), no_reply("message content is unavailable"), None
                )
                continue
            work = Work(doc, message, lease)
            if (doc["address_key"], GLOBAL) in suppressed or (
                doc["address_key"],
                senders.get(message.id, GLOBAL),
            ) in suppressed:
                self.recorder.suppressed(work)
            else:
                ready.append(work)
        if gone:
            now = datetime.now(UTC)
            await self.db.recipients.bulk_write(
                [
                    UpdateOne(
                        w.owned,
                        {
                            "$set": {
                                "delivery_status": "canceled",
                                "lease_until": None,
                                "lease_token": None,
                                "updated_at": now,
                            }
                        },
                    )
                    for w in gone
                ],
                ordered=False,
            )
        # Live status: on its way (MongoDB keeps it queued; the domain lease says who has it).
        now = datetime.now(UTC)
        await publish_many(
            self.redis,
            [
                status_event(
                    w.message.id, {**w.recipient, "delivery_status": "sending", "updated_at": now}
                )
                for w in ready
            ],
        )
        return ready, gone

    async def _prepared_messages(self, ids: set[ObjectId]) -> dict[ObjectId, PreparedMessage]:
        out = {i: self._prepared[i] for i in ids if i in self._prepared}
        missing = [i for i in ids if i not in out]
        if not missing:
            return out
        docs = [
            d
            for part in chunked(missing)
            for d in await self.db.messages.find({"_id": {"$in": part}}, _MESSAGE_FIELDS).to_list()
        ]
        raws: dict[ObjectId, bytes] = {}
        sizes = {d["raw_blob_id"]: d.get("size") for d in docs if d.get("raw_blob_id")}
        for part in chunked(list(sizes)):
            raws.update(await read_blobs(self.db, part, lengths=sizes))
        found = [
            (doc, raw)
            for doc in docs
            if (raw := raws.get(doc.get("raw_blob_id"))) is not None  # type: ignore[arg-type]
        ]
        for message in await self._signed(found):
            out[message.id] = message
            self._prepared[message.id] = message
            while len(self._prepared) > PREPARED_CACHE:
                self._prepared.popitem(last=False)
        return out

    async def _carried_messages(
        self, rows: list[dict[str, Any]]
    ) -> dict[ObjectId, PreparedMessage]:
        """Rows that carry their own MIME (campaign mail to remote addresses: no message
        document, ``campaigns/sender.py``), each signed as it comes; one recipient a message,
        so they are not kept in the cache."""
        carried = [
            ({**{f: r.get(f) for f in CARRIED_FIELDS}, "_id": r["message_id"]}, r["raw"])
            for r in rows
        ]
        return {m.id: m for m in await self._signed(carried)}

    async def _signed(self, found: list[tuple[dict[str, Any], bytes]]) -> list[PreparedMessage]:
        """Each (message document, raw MIME) DKIM-signed for its sender's domain."""
        if not found:
            return []
        domains = [domain_of(doc["from"]["email"]) for doc, _ in found]
        keys = await self._dkim_keys(set(domains))
        signed = await self.signer.sign_many(
            [(raw, keys.get(d)) for (_, raw), d in zip(found, domains, strict=True)]
        )
        return [
            PreparedMessage(doc["_id"], doc, data, raw.split(b"\r\n\r\n", 1)[0] + b"\r\n", d)
            for (doc, raw), d, data in zip(found, domains, signed, strict=True)
        ]

    async def _placeholder(self, message_id: ObjectId) -> PreparedMessage | None:
        doc = await self.db.messages.find_one({"_id": message_id}, _MESSAGE_FIELDS)
        if doc is None:
            return None
        return PreparedMessage(doc["_id"], doc, b"", b"", domain_of(doc["from"]["email"]))

    async def _dkim_keys(self, domains: set[str]) -> dict[str, DkimKey | None]:
        now = time.monotonic()
        out = {d: self._keys[d][1] for d in domains if d in self._keys and self._keys[d][0] > now}
        missing = [d for d in domains if d not in out]
        if missing:
            found = {
                d["_id"]: d
                for d in await self.db.domains.find(
                    {"_id": {"$in": missing}}, {"dkim": 1}
                ).to_list()
            }
            for domain in missing:
                dkim = (found.get(domain) or {}).get("dkim")
                key = DkimKey(domain, dkim["selector"], dkim["private_key"]) if dkim else None
                self._keys[domain] = (now + KEY_TTL, key)
                out[domain] = key
        return out
