"""Receiving mail (seed §10): recipient checks at RCPT, then the DATA pipeline.

RCPT: an address (or alias) of a hosted domain that exists, or a VERP bounce address of ours —
anything else is refused right there (never an open relay). DATA: header limits, parse
(tolerant), SPF/DKIM/DMARC, virus scan of every attachment, spam score, then the durable store
(group commit) — and only when that is acknowledged does the MX say 250.

One module although over 400 lines: RCPT and DATA decisions share the recipient lookups and the
session's state; the durable store is already its own module (group_commit.py).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol

from bson import ObjectId

from app.adapters import metrics
from app.adapters.blobs import BlobStore
from app.adapters.clamav import ClamdScanner
from app.adapters.mail_auth import AuthVerdict, MailAuthenticator
from app.adapters.mongo import Mongo, as_domain_error
from app.adapters.spam_scorer import Scorer, SpamVerdict, bounded_for_scoring
from app.batching import SharedLookup
from app.config import Settings
from app.domain.addresses import domain_of, normalize_email
from app.domain.conversations import normalize_subject
from app.domain.errors import DomainError, ServiceUnavailable
from app.domain.folders import Folder
from app.domain.html_safety import make_snippet
from app.domain.parsing import ParsedMessage
from app.domain.verp import parse_verp_address
from app.services.feedback.bounces import BounceProcessor
from app.services.feedback.spam import SpamFeedbackService
from app.services.inbound.analysis import Analysis
from app.services.inbound.group_commit import BlobWrite, InboundStore, InboundView, PreparedInbound
from app.services.mailbox.content import INLINE_BODY_LIMIT, received_attachments

DOMAIN_CACHE_SECONDS = 5.0  # hosted domains change rarely; users are always read fresh
POSTMASTER = "postmaster"


@dataclass
class Rejected(DomainError):
    """A permanent or temporary SMTP refusal: ``reply`` is the full reply line."""

    reply: str = "550 5.7.1 Rejected"
    code: str = "SMTP_REJECTED"


@dataclass(frozen=True)
class LocalRecipient:
    address: str
    user_id: ObjectId | None = None  # a mailbox
    verp: tuple[str, str] | None = None  # (message id, recipient id) of a bounce address
    unsubscribe: bool = False  # a campaign's List-Unsubscribe mailto address (issue 15)
    taught: bool = False  # the user has spam feedback of their own (read with the mailbox)


@dataclass(frozen=True)
class Envelope:
    client_ip: str
    helo: str
    mail_from: str
    recipients: tuple[LocalRecipient, ...]


@dataclass(frozen=True)
class Receipt:
    message_id: ObjectId | None  # None: a duplicate (retry) or a report with no mailbox copy
    stored_views: int
    folder: str | None
    reports: int  # bounce/complaint events applied


class Unsubscribes(Protocol):
    """Campaign unsubscribe addresses (app/services/campaigns/tracking.py)."""

    def is_unsubscribe_address(self, address: str) -> bool: ...

    async def unsubscribe_by_mail(self, address: str) -> bool: ...


class InboundService:
    def __init__(
        self,
        *,
        mongo: Mongo,
        blobs: BlobStore,
        settings: Settings,
        store: InboundStore,
        authenticator: MailAuthenticator,
        scorer: Scorer,
        bounces: BounceProcessor,
        feedback: SpamFeedbackService,
        scanner: ClamdScanner | None = None,
        unsubscribes: Unsubscribes | None = None,
    ) -> None:
        self.db = mongo.db
        self.unsubscribes = unsubscribes  # mail to a campaign's unsubscribe address
        self.blobs = blobs
        self.settings = settings
        self.store = store
        self.authenticator = authenticator
        self.scorer = scorer
        self.analysis = Analysis(scorer)  # parse + spam score, inline or in a helper process
        self.bounces = bounces
        self.scanner = scanner
        self.feedback = feedback  # per-user adjustment from markSpam/markNotSpam
        self._domains: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._postmasters: dict[str, tuple[float, ObjectId | None]] = {}
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        self._verp_secret = secret.encode()
        # One lookup for the RCPTs of all sessions that ask at the same time: the mailbox of
        # each address and whether its user has spam feedback of their own (asked here, with
        # the mailbox, instead of once per DATA: one query fewer per message).
        self._identities: SharedLookup[str, tuple[ObjectId, bool]] = SharedLookup(
            self._users_by_address
        )
        self._taught: SharedLookup[ObjectId, bool] = SharedLookup(self._users_with_feedback)

    # --- RCPT ------------------------------------------------------------------------------

    async def resolve_recipient(self, address: str) -> LocalRecipient:
        """The local mailbox (or VERP bounce address) behind ``address``; raises ``Rejected``."""
        try:
            key = normalize_email(address)
        except Exception:
            raise Rejected("bad address", reply="501 5.1.3 Bad recipient address syntax") from None
        try:
            if key == POSTMASTER:  # RFC 5321 §4.5.1: accepted without a domain too
                key = f"{POSTMASTER}@{await self._own_domain()}"
            domain = domain_of(key) if "@" in key else ""
            hosted = domain in await self._hosted_domains()
            if not hosted:
                # RFC 5321 §3.6.2 / §7.1: we relay for nobody.
                raise Rejected(
                    "relay denied", reply="550 5.7.1 Relaying denied: not a domain hosted here"
                )
            if self._verp_secret:
                verp = parse_verp_address(key, secret=self._verp_secret)
                if verp is not None:
                    return LocalRecipient(key, verp=verp)
            if self.unsubscribes is not None and self.unsubscribes.is_unsubscribe_address(key):
                return LocalRecipient(key, unsubscribe=True)
            user_id, taught = (await self._identities.get([key])).get(key, (None, False))
            if user_id is None and key == f"{POSTMASTER}@{domain}":
                user_id = await self._postmaster_of(domain)
                taught = user_id is not None and bool(await self._taught.get([user_id]))
        except DomainError:
            raise
        except Exception as e:
            raise _unavailable(e) from e
        if user_id is None:
            raise Rejected("unknown user", reply="550 5.1.1 No such user here")
        return LocalRecipient(key, user_id=user_id, taught=taught)

    async def _users_by_address(self, addresses: list[str]) -> dict[str, tuple[ObjectId, bool]]:
        found = self.db.identities.find(
            {"address": {"$in": addresses}}, {"address": 1, "user_id": 1}
        )
        users = {d["address"]: d["user_id"] async for d in found}
        taught = await self.feedback.has_feedback(list(set(users.values()))) if users else set()
        return {address: (user, user in taught) for address, user in users.items()}

    async def _users_with_feedback(self, users: list[ObjectId]) -> dict[ObjectId, bool]:
        return dict.fromkeys(await self.feedback.has_feedback(users), True)

    async def _own_domain(self) -> str:
        """The hosted domain bare "postmaster" belongs to: our hostname's (mx.example.com →
        example.com), else the first hosted domain by name ("" when none is hosted)."""
        hosted = await self._hosted_domains()
        labels = self.settings.hostname.lower().split(".")
        for i in range(len(labels) - 1):
            if ".".join(labels[i:]) in hosted:
                return ".".join(labels[i:])
        return min(hosted, default="")

    async def _postmaster_of(self, domain: str) -> ObjectId | None:
        """postmaster@domain without an address of its own (RFC 5321 §4.5.1 requires it for
        every hosted domain): the domain's first user, the one who set the domain up."""
        loaded_at, user_id = self._postmasters.get(domain, (0.0, None))
        if time.monotonic() - loaded_at > DOMAIN_CACHE_SECONDS:
            first = await self.db.identities.find_one(
                {"address": {"$regex": f"@{re.escape(domain)}$"}},
                {"user_id": 1},
                sort=[("created_at", 1), ("_id", 1)],
            )
            user_id = first["user_id"] if first else None
            self._postmasters[domain] = (time.monotonic(), user_id)
        return user_id

    async def _hosted_domains(self) -> frozenset[str]:
        loaded_at, domains = self._domains
        if time.monotonic() - loaded_at > DOMAIN_CACHE_SECONDS:
            domains = frozenset([d["_id"] async for d in self.db.domains.find({}, {"_id": 1})])
            self._domains = (time.monotonic(), domains)
        return domains

    def check_headers(self, head: bytes) -> None:
        """The header section alone must stay within ``smtp_max_header_bytes``."""
        if len(head) > self.settings.smtp_max_header_bytes:
            raise Rejected("header too large", reply="552 5.3.4 Message header section too large")

    # --- DATA ------------------------------------------------------------------------------

    async def receive(self, envelope: Envelope, raw: bytes) -> Receipt:
        """Check and durably store one message; raises ``Rejected`` or ``ServiceUnavailable``."""
        self.check_headers(_header_section(raw))
        mailboxes = [r for r in envelope.recipients if r.user_id is not None]
        # Off the event loop when the MX has a helper process (analysis.py). Each stage's
        # seconds go to mailhub_mx_stage_seconds (docs/operations.md).
        started = time.perf_counter()
        parsed, spam = await self.analysis.analyze(raw, score=bool(mailboxes))
        analysed = time.perf_counter()
        metrics.mx_stage("analysis", analysed - started)
        auth = await self.authenticator.authenticate(
            raw,
            client_ip=envelope.client_ip,
            helo=envelope.helo,
            mail_from=envelope.mail_from,
            from_domain=domain_of(parsed.from_.email)
            if parsed.from_ and "@" in parsed.from_.email
            else None,
        )
        metrics.mx_stage("auth", time.perf_counter() - analysed)
        if auth.dmarc.disposition == "reject":
            # RFC 7489 §6.7: the domain owner asked for failing mail to be refused.
            raise Rejected(
                "dmarc reject",
                reply=f"550 5.7.1 Unauthenticated email from "
                f"{auth.dmarc.from_domain} is not accepted due to its DMARC policy",
            )
        await self._scan(parsed)
        reports = [r for r in envelope.recipients if r.verp is not None]
        applied = 0
        for report in reports:
            if report.verp is not None:
                applied += await self.bounces.process_report(raw, verp=report.verp)
        for r in envelope.recipients:
            if r.unsubscribe and self.unsubscribes is not None:
                applied += await self.unsubscribes.unsubscribe_by_mail(r.address)
        if not mailboxes or spam is None:
            return Receipt(None, 0, None, applied)
        metrics.spam_verdict(spam.is_spam, spam.score)
        folder = (
            Folder.SPAM if spam.is_spam or auth.dmarc.disposition == "quarantine" else Folder.INBOX
        )
        personal = await self._personal_verdicts(
            raw, mailboxes, quarantine=auth.dmarc.disposition == "quarantine"
        )
        prepared = self.prepare(
            envelope, raw, parsed, auth, spam, folder.value, mailboxes, personal
        )
        queued = time.perf_counter()
        result = await self.store.store(prepared)
        metrics.mx_stage("store", time.perf_counter() - queued)
        return Receipt(result.message_id, result.items, folder.value, applied)

    async def _personal_verdicts(
        self, raw: bytes, mailboxes: list[LocalRecipient], *, quarantine: bool
    ) -> dict[ObjectId, tuple[str, dict[str, Any]]]:
        """(folder, verdict) for recipients whose own spam feedback moves the global verdict."""
        taught = dict.fromkeys(r.user_id for r in mailboxes if r.taught and r.user_id is not None)
        out: dict[ObjectId, tuple[str, dict[str, Any]]] = {}
        for user_id in taught:
            v = await self.feedback.verdict_for_user(
                bounded_for_scoring(raw), user_id, getattr(self.scorer, "model", None)
            )
            verdict = SpamVerdict(
                bool(v.is_spam),
                float(v.score),
                str(v.model_version),
                [str(r) for r in v.reasons],
                bool(v.probable),
            )
            folder = Folder.SPAM if verdict.is_spam or quarantine else Folder.INBOX
            out[user_id] = (folder.value, verdict.as_doc())
        return out

    async def _scan(self, parsed: ParsedMessage) -> None:
        if self.scanner is None:
            return
        for attachment in parsed.attachments:
            try:
                verdict = await self.scanner.scan(attachment.data)
            except ServiceUnavailable:
                metrics.attachment_scan("error")
                raise
            metrics.attachment_scan("clean" if verdict.clean else "infected")
            if not verdict.clean:
                raise Rejected(
                    f"virus {verdict.signature}",
                    reply=f"554 5.7.1 Message rejected: virus found ({verdict.signature})",
                )

    def prepare(
        self,
        envelope: Envelope,
        raw: bytes,
        parsed: ParsedMessage,
        auth: AuthVerdict,
        spam: SpamVerdict,
        folder: str,
        mailboxes: list[LocalRecipient],
        personal: dict[ObjectId, tuple[str, dict[str, Any]]] | None = None,
    ) -> PreparedInbound:
        """The documents and blobs of one accepted message (pure: no I/O)."""
        now = datetime.now(UTC)
        message_id = ObjectId()
        content_hash = hashlib.sha256(raw).hexdigest()
        trace = self._trace_headers(envelope, auth, now, message_id, mailboxes)
        raw_blob = BlobWrite(
            ObjectId(), trace + raw, "message.eml", {"kind": "raw", "message_id": message_id}
        )
        stored = received_attachments(
            parsed.attachments,
            message_id,
            raw_blob.blob_id,
            len(trace),
            "clean" if self.scanner else "not_scanned",
        )
        blobs = [raw_blob, *(BlobWrite(*b) for b in stored.blobs)]
        bodies: dict[str, Any] = {}
        for name, value in (("text_body", parsed.text_body), ("html_body", parsed.html_body)):
            if value is not None and len(value) > INLINE_BODY_LIMIT:
                blob = BlobWrite(ObjectId(), value.encode("utf-8"), f"{name}.txt", {"kind": name})
                blobs.append(blob)
                bodies[name], bodies[name.replace("_body", "_blob_id")] = None, blob.blob_id
            else:
                bodies[name] = value
        spam_doc = spam.as_doc()
        message = {
            "_id": message_id,
            "rfc822_message_id": parsed.message_id,
            "sender_user_id": None,
            "direction": "inbound",
            "status": "received",
            "from": _addr(parsed.from_)
            if parsed.from_
            else {"name": None, "email": envelope.mail_from or ""},
            "sender": _addr(parsed.sender) if parsed.sender else None,
            "to": [_addr(a) for a in parsed.to],
            "cc": [_addr(a) for a in parsed.cc],
            "bcc": [],
            "reply_to": [_addr(a) for a in parsed.reply_to],
            "subject": parsed.subject,
            "normalized_subject": normalize_subject(parsed.subject),
            "snippet": make_snippet(parsed.text_body or ""),
            **bodies,
            "date": parsed.date,
            "in_reply_to": parsed.in_reply_to,
            "references": list(parsed.references),
            "headers": parsed.headers,
            "raw_blob_id": raw_blob.blob_id,
            "content_sha256": content_hash,
            "attachments": stored.refs,
            "has_attachments": bool(stored.refs),
            "size": len(raw),
            "spam": spam_doc,
            "auth_results": auth.header,
            "auth": {
                "spf": auth.spf,
                "dkim": [s.result for s in auth.dkim],
                "dmarc": auth.dmarc.result,
            },
            "received_from": {
                "ip": envelope.client_ip,
                "helo": envelope.helo,
                "mail_from": envelope.mail_from,
            },
        }
        users = list(dict.fromkeys(r.user_id for r in mailboxes if r.user_id is not None))
        return PreparedInbound(
            message=message,
            views=[InboundView(u, *(personal or {}).get(u, (folder, spam_doc))) for u in users],
            dedupe_key=f"{parsed.message_id or ''}|{content_hash}",
            blobs=blobs,
            attachments=stored.docs,
        )

    def _trace_headers(
        self,
        envelope: Envelope,
        auth: AuthVerdict,
        now: datetime,
        message_id: ObjectId,
        mailboxes: list[LocalRecipient],
    ) -> bytes:
        # RFC 5321 §4.4: a Received line per hop; RFC 8601: our Authentication-Results on top.
        helo = _header_safe(envelope.helo) or "unknown"
        single = f"\r\n\tfor <{_header_safe(mailboxes[0].address)}>" if len(mailboxes) == 1 else ""
        received = (
            f"Received: from {helo} ([{envelope.client_ip}])\r\n\tby {self.settings.hostname} "
            f"(mailhub) with ESMTP id {message_id}{single};\r\n\t{format_datetime(now)}\r\n"
        )
        return f"Authentication-Results: {auth.header}\r\n{received}".encode("utf-8", "replace")

    def load_spam_model(self) -> None:
        """Load the spam model before the MX accepts mail: a missing or bad one stops the MX
        at start, loudly, not at its first message (scorers without a model: nothing to do)."""
        load = getattr(self.scorer, "load", None)
        if load is not None:
            load()


def _addr(a: Any) -> dict[str, Any]:
    return {"name": a.name, "email": a.email}


def _header_safe(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable() and ch not in "\r\n")[:255]


def _header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw if end < 0 else raw[:end]


def _unavailable(e: BaseException) -> DomainError:
    return as_domain_error(e) or ServiceUnavailable(
        "the mail store is unavailable", retry_after_seconds=60
    )
