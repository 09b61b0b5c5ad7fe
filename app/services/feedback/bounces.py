"""Bounces and complaints (seed §9): DSNs to VERP addresses, ARF reports, provider webhooks.

All three become ``DeliveryReport`` values and go through ``apply``: one delivery event
(append-only, deduplicated by a key so a retried DSN or webhook counts once), the recipient's
status, a suppression for hard bounces (classified by enhanced status code and reply text,
``app.domain.bounces`` — never a blanket 5xx) and complaints, then the sender's reputation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId

from app.adapters import metrics
from app.adapters.mongo import Mongo, in_transaction, is_duplicate_key
from app.domain.addresses import domain_of, normalize_email
from app.domain.bounces import (
    SmtpOutcome,
    classify,
    outcome_from_dsn,
    parse_diagnostic,
    parse_reply,
)
from app.domain.campaign_tokens import campaign_row_id
from app.domain.dsn import RecipientReport, parse_dsn
from app.domain.errors import Conflict, ValidationError
from app.domain.feedback_reports import parse_feedback_report
from app.domain.ids import parse_object_id
from app.domain.verp import parse_verp_address
from app.services.feedback.reputation import ReputationService
from app.services.feedback.suppression import SuppressionService

log = structlog.get_logger(__name__)

KINDS = ("delivered", "bounced", "deferred", "complained")
# A later report may only move a recipient forward; a stray "delivered" never undoes a bounce.
_BOUNCEABLE = ("queued", "scheduled", "sending", "deferred", "sent")


@dataclass(frozen=True)
class DeliveryReport:
    """One thing a remote party told us about one recipient of one of our messages."""

    kind: str  # delivered | bounced | deferred | complained
    source: str  # dsn | arf | webhook
    dedupe_key: str
    message_id: ObjectId | None = None
    recipient_id: ObjectId | None = None
    address: str | None = None
    outcome: SmtpOutcome | None = None
    remote_mta: str | None = None
    occurred_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    applied: bool
    event_id: ObjectId | None = None
    suppressed: bool = False
    reason: str = ""


class BounceProcessor:
    def __init__(
        self,
        mongo: Mongo,
        suppression: SuppressionService,
        reputation: ReputationService,
        secret: bytes,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.suppression = suppression
        self.reputation = reputation
        self.secret = secret

    # --- inputs ----------------------------------------------------------------------------

    async def process_report(self, raw: bytes, *, verp: tuple[str, str]) -> int:
        """A message sent to a VERP address: a DSN, an ARF complaint, or neither (ignored)."""
        message_id, recipient_id = ObjectId(verp[0]), ObjectId(verp[1])
        digest = hashlib.sha256(raw).hexdigest()
        reports = reports_from_message(raw, message_id, recipient_id, digest)
        applied = 0
        for report in reports:
            if (await self.apply(report)).applied:
                applied += 1
        return applied

    async def process_webhook(self, payload: dict[str, Any]) -> Applied:
        """A provider event (already authenticated by the caller)."""
        return await self.apply(report_from_webhook(payload, self.secret))

    async def process_signed_webhook(self, signature: str, body: bytes) -> list[Applied]:
        """A provider request whose signature the caller verified: an event object or a list of
        at most 100. Each signed request counts once — its signature is kept as a receipt
        (``webhook_receipts``, expiring), and a second arrival is a replay (Conflict, code
        REPLAYED). A body that is not valid keeps its receipt (a corrected one is signed anew,
        so it is not a replay); a failure of ours gives the receipt back, so the provider's
        retry is applied."""
        try:
            await self.db.webhook_receipts.insert_one(
                {"_id": signature, "created_at": datetime.now(UTC)}
            )
        except Exception as e:
            if is_duplicate_key(e):
                raise Conflict("this signed request was already received", "REPLAYED") from None
            raise
        try:
            try:
                payload = json.loads(body)
            except ValueError:
                raise ValidationError.on("body", "body is not JSON") from None
            batch = payload if isinstance(payload, list) else [payload]
            if not all(isinstance(p, dict) for p in batch) or len(batch) > 100:
                raise ValidationError.on("body", "an event object or a list of at most 100")
            return [await self.process_webhook(p) for p in batch]
        except ValidationError:
            raise
        except Exception:
            await self.db.webhook_receipts.delete_one({"_id": signature})
            raise

    # --- the one code path -----------------------------------------------------------------

    async def apply(self, report: DeliveryReport) -> Applied:
        """Record the event, move the recipient, suppress when it is a hard bounce or complaint."""
        recipient = await self._recipient(report)
        if recipient is None:
            log.info(
                "delivery report for an unknown recipient",
                source=report.source,
                message_id=str(report.message_id),
                address=report.address,
            )
            return Applied(False, reason="unknown recipient")
        message = (
            # a campaign's row to a remote address names its sender itself (no message doc)
            recipient
            if recipient.get("from")
            else await self.db.messages.find_one({"_id": recipient["message_id"]}, {"from": 1})
            or {}
        )
        campaign_id = recipient.get("campaign_id")
        if not message and campaign_id:
            # campaign mail keeps no mailbox view, so the orphan sweep removes its message
            # after delivery; the campaign still names the sending address
            message = await self.db.campaigns.find_one({"_id": campaign_id}, {"from": 1}) or {}
        sender_domain = domain_of((message.get("from") or {}).get("email") or "x@unknown").lower()
        now = datetime.now(UTC)
        metadata: dict[str, Any] = {"source": report.source, **report.metadata}
        classification = None
        if (
            report.outcome is not None
            and report.kind in ("bounced", "deferred")
            and report.outcome.code >= 400
        ):
            classification = classify(report.outcome)
            metadata.update(
                {
                    "bounce_class": classification.bounce_class.value,
                    "rule": classification.rule,
                    "permanent": classification.permanent,
                    "hard": classification.suppress,
                    "reply": {
                        "code": report.outcome.code,
                        "enhanced": report.outcome.enhanced,
                        "text": report.outcome.text[:500],
                    },
                }
            )
        kind = report.kind
        if kind == "bounced" and classification is not None and not classification.permanent:
            kind = "deferred"  # a "failed" DSN for a 4xx: the remote may still deliver
        suppress_reason = (
            "complaint"
            if kind == "complained"
            else "hard_bounce"
            if classification is not None and classification.suppress and kind == "bounced"
            else None
        )
        event = {
            "_id": ObjectId(),
            "message_id": recipient["message_id"],
            "recipient": recipient["address"],
            "recipient_id": recipient["_id"],
            "event_type": kind,
            "occurred_at": report.occurred_at or now,
            "recorded_at": now,
            "sender_user_id": recipient.get("sender_user_id"),
            "sender_domain": sender_domain,
            "dedupe_key": report.dedupe_key,
            "metadata": metadata,
        }
        if campaign_id:
            event["campaign_id"] = campaign_id

        async def work(session: Any) -> None:
            await self.db.delivery_events.insert_one(event, session=session)
            if kind == "bounced":
                assert report.outcome is not None and classification is not None
                await self.db.recipients.update_one(
                    {"_id": recipient["_id"], "delivery_status": {"$in": list(_BOUNCEABLE)}},
                    {
                        "$set": {
                            "delivery_status": "bounced",
                            "bounce_class": classification.bounce_class.value,
                            "last_reply": {
                                "code": report.outcome.code,
                                "enhanced": report.outcome.enhanced,
                                "text": report.outcome.text[:500],
                                "mx": report.remote_mta,
                            },
                            "updated_at": now,
                            "next_attempt_at": None,
                            "lease_until": None,
                        }
                    },
                    session=session,
                )
            elif kind in ("delivered", "complained"):
                await self.db.recipients.update_one(
                    {"_id": recipient["_id"]},
                    {"$set": {f"{kind}_at": now, "updated_at": now}},
                    session=session,
                )
            if suppress_reason:
                await self.suppression.add(
                    recipient["address"],
                    reason=suppress_reason,
                    bounce_class=classification.bounce_class.value if classification else None,
                    rule=classification.rule if classification else f"{report.source}.complaint",
                    source_message_id=recipient["message_id"],
                    event_id=event["_id"],
                    session=session,
                )
                # The sender whose mail caused it sees (and may lift) the entry through GraphQL.
                await self.db.suppressions.update_one(
                    {"address": normalize_email(recipient["address"]), "scope": "global"},
                    {"$addToSet": {"visible_to": recipient.get("sender_user_id")}},
                    session=session,
                )

        try:
            await in_transaction(self.mongo, work)
        except Exception as e:
            if is_duplicate_key(e):
                return Applied(False, reason="duplicate")
            raise
        metrics.delivery_report(
            kind, classification.bounce_class.value if classification else None, report.source
        )
        if suppress_reason:
            await self.reputation.evaluate(recipient.get("sender_user_id"), sender_domain)
        return Applied(True, event["_id"], bool(suppress_reason), kind)

    async def _recipient(self, report: DeliveryReport) -> dict[str, Any] | None:
        if report.recipient_id is not None:
            query: dict[str, Any] = {"_id": report.recipient_id}
            if report.message_id is not None:
                query["message_id"] = report.message_id
            found = await self.db.recipients.find_one(query)
            if found is not None:
                return found  # type: ignore[no-any-return]
        if report.message_id is not None and report.address:
            return await self.db.recipients.find_one(  # type: ignore[no-any-return]
                {"message_id": report.message_id, "address_key": normalize_email(report.address)}
            )
        if report.address and report.metadata.get("rfc822_message_id"):
            message = await self.db.messages.find_one(
                {
                    "rfc822_message_id": report.metadata["rfc822_message_id"],
                    "direction": "outbound",
                },
                {"_id": 1},
            )
            if message is not None:
                return await self.db.recipients.find_one(  # type: ignore[no-any-return]
                    {"message_id": message["_id"], "address_key": normalize_email(report.address)}
                )
            rid = campaign_row_id(report.metadata["rfc822_message_id"])
            if rid is not None:  # campaign mail: ``<row id>.<campaign id>@host``, no message doc
                return await self.db.recipients.find_one(  # type: ignore[no-any-return]
                    {"_id": rid, "address_key": normalize_email(report.address)}
                )
        return None


# --- pure translation of the three inputs ----------------------------------------------------


def reports_from_message(
    raw: bytes, message_id: ObjectId, recipient_id: ObjectId, digest: str
) -> list[DeliveryReport]:
    """The reports in a message sent to a VERP address (which names the exact recipient)."""
    dsn = parse_dsn(raw)
    if dsn is not None:
        rows = _relevant_rows(dsn.recipients)
        out = []
        for row in rows:
            kind = {"failed": "bounced", "delayed": "deferred"}.get(row.action, "delivered")
            outcome = None
            if kind != "delivered":
                try:
                    outcome = outcome_from_dsn(row.status, row.diagnostic_code)
                except ValidationError:
                    outcome = SmtpOutcome(
                        550 if kind == "bounced" else 450, None, row.diagnostic_code or ""
                    )
            out.append(
                DeliveryReport(
                    kind=kind,
                    source="dsn",
                    dedupe_key=f"dsn:{digest}:{recipient_id}:{kind}",
                    message_id=message_id,
                    recipient_id=recipient_id,
                    address=row.final_recipient,
                    outcome=outcome,
                    remote_mta=row.remote_mta or dsn.reporting_mta,
                    metadata={
                        "status": row.status,
                        "diagnostic": (row.diagnostic_code or "")[:500],
                        "reporting_mta": dsn.reporting_mta,
                    },
                )
            )
        return out
    arf = parse_feedback_report(raw)
    if arf is not None and arf.feedback_type in ("abuse", "fraud", "virus", "other"):
        return [
            DeliveryReport(
                kind="complained",
                source="arf",
                dedupe_key=f"arf:{digest}:{recipient_id}",
                message_id=message_id,
                recipient_id=recipient_id,
                metadata={
                    "feedback_type": arf.feedback_type,
                    "user_agent": arf.user_agent,
                    "source_ip": arf.source_ip,
                },
            )
        ]
    return []


def _relevant_rows(rows: tuple[RecipientReport, ...]) -> list[RecipientReport]:
    # One VERP address per recipient: a report about several recipients is about ours; the
    # most final row wins (failed over delayed over delivered).
    rank = {"failed": 0, "delayed": 1, "delivered": 2, "relayed": 2, "expanded": 2}
    return sorted(rows, key=lambda r: rank.get(r.action, 3))[:1]


def report_from_webhook(payload: dict[str, Any], secret: bytes) -> DeliveryReport:
    """A provider event: ``{"id", "type", "message_id" | "verp", "recipient_id"?, "recipient",
    "timestamp"?, "smtp": {"code", "enhanced"?, "text"} | "diagnostic"?}``.

    Raises ValidationError."""
    event_id = str(payload.get("id") or "").strip()
    kind = str(payload.get("type") or "").strip().lower()
    if not event_id or len(event_id) > 200:
        raise ValidationError.on("id", "an event id (1-200 characters) is required")
    if kind not in ("delivered", "bounced", "complained", "deferred"):
        raise ValidationError.on("type", "type must be delivered, bounced, complained or deferred")
    message_id = parse_object_id(str(payload.get("message_id") or ""))
    recipient_id = parse_object_id(str(payload.get("recipient_id") or ""))
    if payload.get("verp"):
        ids = parse_verp_address(str(payload["verp"]), secret=secret)
        if ids is None:
            raise ValidationError.on("verp", "not one of our bounce addresses")
        message_id, recipient_id = ObjectId(ids[0]), ObjectId(ids[1])
    address = str(payload.get("recipient") or "") or None
    if message_id is None and not payload.get("rfc822_message_id"):
        raise ValidationError.on("message_id", "message_id, verp or rfc822_message_id is required")
    if recipient_id is None and not address:
        raise ValidationError.on("recipient", "recipient or recipient_id is required")
    outcome = None
    if kind in ("bounced", "deferred"):
        smtp = payload.get("smtp") or {}
        if isinstance(smtp, dict) and smtp.get("code"):
            try:
                code = int(smtp["code"])
                outcome = parse_reply(
                    code, f"{smtp.get('enhanced') or ''} {smtp.get('text') or ''}".strip()
                )
            except (TypeError, ValueError, ValidationError) as e:
                raise ValidationError.on("smtp.code", "an SMTP reply code 400-599") from e
        elif payload.get("diagnostic"):
            outcome = parse_diagnostic(str(payload["diagnostic"]))
        if outcome is None:
            outcome = SmtpOutcome(
                550 if kind == "bounced" else 450, None, str(payload.get("diagnostic") or "")
            )
    occurred = None
    if isinstance(payload.get("timestamp"), int | float):
        occurred = datetime.fromtimestamp(float(payload["timestamp"]), UTC)
    return DeliveryReport(
        kind=kind,
        source="webhook",
        dedupe_key=f"webhook:{event_id}",
        message_id=message_id,
        recipient_id=recipient_id,
        address=address,
        outcome=outcome,
        occurred_at=occurred,
        metadata={
            "provider_event_id": event_id,
            **(
                {"rfc822_message_id": str(payload["rfc822_message_id"])}
                if payload.get("rfc822_message_id")
                else {}
            ),
        },
    )
