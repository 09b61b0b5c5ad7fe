"""Every MongoDB index, in one place, each with the query it serves (STYLE.md §6).

``ensure_indexes`` runs at start-up of every process; creating an existing index is a no-op,
and an index in ``RETIRED`` (made by an earlier version) is dropped where it still exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING as ASC
from pymongo import DESCENDING as DESC
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure


@dataclass(frozen=True)
class Index:
    collection: str
    keys: list[tuple[str, int]]
    serves: str
    options: dict[str, Any] = field(default_factory=dict)


INDEXES: list[Index] = [
    # --- accounts ---
    Index(
        "users",
        [("email", ASC)],
        "login and `users create`: a user by primary address",
        {"unique": True},
    ),
    Index(
        "identities",
        [("address", ASC)],
        "RCPT checks and `from` ownership: alias → user",
        {"unique": True},
    ),
    Index("identities", [("user_id", ASC)], "me.addresses: the aliases of a user"),
    Index(
        "api_tokens",
        [("expires_at", ASC)],
        "expired tokens vanish by themselves (TTL)",
        {"expireAfterSeconds": 0},
    ),
    Index("api_tokens", [("user_id", ASC)], "revoke every token of a user"),
    Index(
        "api_keys",
        [("hash", ASC)],
        "authenticating a request that carries an API key (its SHA-256)",
        {"unique": True},
    ),
    Index("api_keys", [("user_id", ASC)], "apiKeys: a user's keys; disabling a user deletes them"),
    # --- templates (issue 14) ---
    Index(
        "templates",
        [("user_id", ASC), ("key", ASC)],
        "template(key), saveTemplate: one template per (user, key); templates: sorted by key",
        {"unique": True},
    ),
    Index(
        "template_versions",
        [("template_id", ASC), ("version", ASC)],
        "a version of a template (send, render, publish); versions in order; numbers unique",
        {"unique": True},
    ),
    # --- campaigns (issue 15) ---
    Index(
        "blobs.chunks",
        [("files_id", ASC), ("n", ASC)],
        "GridFS reads (BlobStore, read_blobs); GridFS makes it on its first upload, but the "
        "campaign sender's bulk writes (write_blobs) may come first",
        {"unique": True},
    ),
    Index("campaigns", [("user_id", ASC), ("_id", DESC)], "campaigns: a user's, newest first"),
    Index(
        "campaigns",
        [("status", ASC), ("next_batch_at", ASC)],
        "campaign sweep: sending campaigns whose next batch is overdue",
    ),
    Index(
        "campaign_lists",
        [("campaign_id", ASC), ("keys", ASC)],
        "addCampaignRecipients / CSV: the addresses an add repeats (duplicates reported; not "
        "unique, the add's transaction checks: services/campaigns/lists.py)",
    ),
    Index(
        "campaign_lists",
        [("campaign_id", ASC), ("end", ASC)],
        "the batch sender: the parts of a campaign's list from its pending floor (a range); stats",
    ),
    Index(
        "campaign_lists",
        [("ids", ASC)],
        "unsubscribe / tracking: a recipient of a list stored before the parts, by its own id",
        {"sparse": True},
    ),
    Index(
        "recipients",
        [("campaign_id", ASC), ("delivery_status", ASC)],
        "campaign stats: the delivery states of a campaign's messages",
        {"partialFilterExpression": {"campaign_id": {"$type": "objectId"}}},
    ),
    Index(
        "delivery_events",
        [("campaign_id", ASC), ("event_type", ASC)],
        "campaign stats: opens and clicks of a campaign",
        {"partialFilterExpression": {"campaign_id": {"$type": "objectId"}}},
    ),
    Index(
        "delivery_events",
        [("message_id", ASC), ("event_type", ASC), ("occurred_at", ASC)],
        "tracking: a message's delivery time and its recent clicks (machine rules); its "
        "message_id prefix serves deliveryEvents(messageId), the history of one message "
        "(sorted in memory: a message has a handful of events)",
    ),
    # --- outbound webhooks (issue 14) ---
    Index("webhooks", [("user_id", ASC)], "webhooks: a user's endpoints"),
    Index(
        "webhooks",
        [("active", ASC), ("next_attempt_at", ASC)],
        "dispatch_webhooks (every second): the endpoints that are due",
    ),
    # --- mailbox views ---
    Index(
        "mailbox_items",
        [("user_id", ASC), ("message_id", ASC), ("role", ASC)],
        "one view per (user, message, role): a retried delivery never files twice",
        {"unique": True},
    ),
    Index(
        "mailbox_items",
        [("user_id", ASC), ("folder", ASC), ("received_at", DESC), ("_id", DESC)],
        "messages(folder): keyset page, newest first",
    ),
    Index(
        "mailbox_items",
        [("user_id", ASC), ("labels", ASC), ("received_at", DESC), ("_id", DESC)],
        "messages(label): keyset page, newest first",
    ),
    Index(
        "mailbox_items",
        [("user_id", ASC), ("thread_id", ASC), ("received_at", ASC)],
        "thread(id).messages oldest first, and thread summary recomputation",
    ),
    Index(
        "mailbox_items",
        [("message_id", ASC)],
        "garbage collection: is a message still referenced by any view?",
    ),
    Index(
        "mailbox_items",
        [("user_id", ASC), ("dedupe_key", ASC)],
        "inbound retry after a lost 250: Message-ID + content hash per recipient",
        {"unique": True, "partialFilterExpression": {"dedupe_key": {"$type": "string"}}},
    ),
    Index(
        "mailbox_counters",
        [("user_id", ASC), ("kind", ASC), ("name", ASC)],
        "mailboxes(): total/unread per folder and label without counting items",
        {"unique": True},
    ),
    Index(
        "threads",
        [("user_id", ASC), ("folders", ASC), ("latest_at", DESC), ("_id", DESC)],
        "threads(folder): keyset page by latest message",
    ),
    Index(
        "threads",
        [("user_id", ASC), ("labels", ASC), ("latest_at", DESC), ("_id", DESC)],
        "threads(label): keyset page by latest message",
    ),
    Index(
        "threads",
        [("subject_key", ASC), ("latest_at", DESC)],
        "subject fallback threading for mail without reference headers: a batch's (user, base "
        "subject) keys in one $in, newest first (thread_refs need no index: their _id is the "
        "user and the Message-ID)",
    ),
    Index(
        "mailbox_changes",
        [("user_id", ASC), ("seq", ASC)],
        "changes(since): a user's change log after a state",
        {"unique": True},
    ),
    Index(
        "mailbox_changes",
        [("at", ASC)],
        "change log retention (30 days, TTL)",
        {"expireAfterSeconds": 30 * 24 * 3600},
    ),
    # --- IMAP (docs/imap.md): UIDs per user and mailbox over the same views ---
    Index(
        "imap_mailboxes",
        [("user_id", ASC), ("key", ASC)],
        "SELECT/STATUS: a mailbox's UIDVALIDITY, UIDNEXT and sync position",
        {"unique": True},
    ),
    Index(
        "imap_uid_blocks",
        [("user_id", ASC), ("mailbox", ASC), ("first", ASC)],
        "SELECT/sync: a mailbox's numbering in UID order, one document per 500 UIDs; "
        "one block per range (a UID is never given twice)",
        {"unique": True},
    ),
    Index(
        "spam_tokens",
        [("user_id", ASC), ("token", ASC)],
        "per-user spam adjustment: the user's counts for one message's tokens",
        {"unique": True},
    ),
    Index(
        "spam_labels",
        [("user_id", ASC), ("message_id", ASC)],
        "markSpam/markNotSpam: one label per user and message",
        {"unique": True},
    ),
    Index("spam_labels", [("at", DESC)], "retraining: the most recent labels"),
    Index("spam_models", [("promoted_at", DESC)], "the newest promoted global model"),
    # --- content ---
    Index(
        "messages", [("rfc822_message_id", ASC)], "find a message by its Message-ID (DSNs, replies)"
    ),
    Index("messages", [("status", ASC), ("created_at", ASC)], "garbage collection of orphans"),
    Index(
        "messages",
        [("content_sha256", ASC)],
        "inbound retry after a lost 250: an earlier copy of the same bytes (then its views)",
    ),
    Index("attachments", [("owner_user_id", ASC), ("created_at", DESC)], "a user's uploads"),
    Index(
        "attachments",
        [("expires_at", ASC)],
        "sweep of unreferenced uploads older than a day",
        {"partialFilterExpression": {"expires_at": {"$type": "date"}}},
    ),
    # --- outbound ---
    Index(
        "recipients",
        [("delivery_status", ASC), ("next_attempt_at", ASC)],
        "delivery sweep: due recipients whose lease expired",
    ),
    Index(
        "recipients",
        [("domain", ASC), ("delivery_status", ASC), ("next_attempt_at", ASC)],
        "delivery lanes: pull more of one destination domain's due recipients",
    ),
    Index(
        "delivery_events",
        [("dedupe_key", ASC)],
        "bounce/complaint/webhook processing: the same report applied once",
        {"unique": True, "partialFilterExpression": {"dedupe_key": {"$type": "string"}}},
    ),
    Index(
        "delivery_events",
        [("sender_user_id", ASC), ("_id", ASC)],
        "events(after:) and webhook delivery: a sender's log in cursor (id) order; "
        "reputation: a user's counts over the rolling window (an _id range: by when recorded)",
    ),
    Index(
        "delivery_events",
        [("event_ids", ASC)],
        "the event log: the bucket a cursor points into, for buckets written before their ids "
        "were made for them (a bucket's _id now names it: app/services/events/buckets.py); "
        "sparse: those buckets only, so nothing else pays for it (SecantusDB scans the "
        "collection for a partial index's equality, 190 ms at 20,000 events; sparse 8.5 ms)",
        {"sparse": True},
    ),
    Index(
        "delivery_events",
        [("message_keys", ASC)],
        "deliveryEvents(messageId): the queued/suppressed buckets that may hold a message's "
        "events, by the first nine bytes of its id (a campaign batch's bucket has a few keys "
        "where 500 message ids cost 20 ms of SecantusDB CPU an insert; events/buckets.py); "
        "sparse: buckets only",
        {"sparse": True},
    ),
    Index(
        "delivery_events",
        [("sender_domain", ASC), ("_id", ASC)],
        "reputation: a sending domain's counts over the rolling window (an _id range)",
    ),
    Index(
        "recipients",
        [("message_id", ASC), ("address_key", ASC)],
        "bounce processing without VERP: the recipient of a message by address; its prefix "
        "serves MailboxItem.recipients (a separate message_id index cost every recipient "
        "write another index update)",
    ),
    Index(
        "reputation_events",
        [("key", ASC), ("occurred_at", DESC)],
        "reputation query: pause/resume history of a user or domain",
    ),
    Index(
        "webhook_receipts",
        [("created_at", ASC)],
        "webhook replay protection: seen signatures expire after the tolerance window",
        {"expireAfterSeconds": 3600},
    ),
    Index(
        "suppressions",
        [("visible_to", ASC), ("address", ASC)],
        "suppressions query: a user's entries, keyset by address",
    ),
    Index(
        "suppressions",
        [("address", ASC), ("scope", ASC)],
        "suppression check at send time and before each attempt",
        {"unique": True},
    ),
    Index(
        "idempotency_keys",
        [("created_at", ASC)],
        "idempotency keys live 24 h (TTL)",
        {"expireAfterSeconds": 24 * 3600},
    ),
    Index("send_log", [("user_id", ASC), ("created_at", DESC)], "per-user send counts"),
    # --- search (issue 6); the repair sweep pages mailbox_items by _id (the default index) ---
    Index(
        "search_reindex_touched",
        [("alias", ASC)],
        "`mailhub reindex`: items changed during the copy, indexed again after the alias swap",
    ),
]


@dataclass(frozen=True)
class Retired:
    """An index an earlier version made and this one no longer wants: each index is written
    on every insert, so one that no query needs is a cost on every write."""

    collection: str
    keys: list[tuple[str, int]]
    why: str

    @property
    def name(self) -> str:  # the name MongoDB gives an index made without one
        return "_".join(f"{field}_{direction}" for field, direction in self.keys)


RETIRED: list[Retired] = [
    Retired(
        "threads",
        [("user_id", ASC), ("normalized_subject", ASC), ("latest_at", DESC)],
        "replaced by (subject_key, latest_at): the subject candidates of a whole batch in one "
        "query instead of one per user and subject",
    ),
    Retired(
        "thread_refs",
        [("user_id", ASC), ("rfc822_id", ASC)],
        "a ref's _id is now the user and the Message-ID (unique by itself), so a batch's refs "
        "are one _id $in query; the copies with the old _id are rewritten at start-up "
        "(app.services.mailbox.migrations), which this unique index would refuse",
    ),
    Retired(
        "delivery_events",
        [("sender_user_id", ASC), ("occurred_at", ASC)],
        "a user's reputation window is an _id range of (sender_user_id, _id), the log's index",
    ),
    Retired(
        "delivery_events",
        [("occurred_at", ASC)],
        "expire_events deletes by _id (when an event was recorded), on the _id index; with "
        "the line above, two index entries fewer per event (0.35-0.38 -> 0.28-0.29 ms per "
        'event inserted on SecantusDB, docs/benchmarks.md "Fifteenth session")',
    ),
    Retired(
        "delivery_events",
        [("sender_domain", ASC), ("occurred_at", ASC)],
        "a domain's reputation window is an _id range of (sender_domain, _id)",
    ),
    Retired(
        "delivery_events",
        [("message_id", ASC), ("occurred_at", ASC)],
        "deliveryEvents(messageId) is served by the prefix of (message_id, event_type, "
        "occurred_at); one index entry fewer per event (0.77-0.84 -> 0.71 ms per event "
        "inserted on SecantusDB, docs/benchmarks.md)",
    ),
]

_NO_SUCH_INDEX = {26, 27}  # NamespaceNotFound, IndexNotFound: nothing to drop


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    for retired in RETIRED:
        try:
            await db[retired.collection].drop_index(retired.name)
        except OperationFailure as e:
            if e.code not in _NO_SUCH_INDEX:
                raise
    for index in INDEXES:
        await db[index.collection].create_index(index.keys, **index.options)
