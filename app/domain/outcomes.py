"""What one delivery attempt means for one recipient (DESIGN.md §5 "Deliver", seed §8).

Pure: given the remote reply and what we know of the recipient, decide its new status, when to
try again, whether it is suppressed and which notice the sender is owed. The delivery service
only applies these decisions; every rule about retrying, giving up and bouncing lives here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from app.domain.bounces import NO_REPLY, SmtpOutcome, classify
from app.domain.dsn import RecipientReport
from app.domain.retry import (
    DEFAULT_DELAY_NOTICE_AFTER,
    DEFAULT_QUEUE_LIFETIME,
    DEFAULT_SCHEDULE,
    is_expired,
    next_delay,
    should_send_delay_notice,
)

# Statuses (DESIGN.md §3). A recipient in one of FINAL never changes again.
PENDING = ("queued", "deferred", "sending")
FINAL = ("sent", "bounced", "suppressed", "expired", "canceled")
UNFINISHED = ("scheduled", *PENDING)  # delivery still owes this recipient something


@dataclass(frozen=True)
class RetryPolicy:
    lifetime: timedelta = DEFAULT_QUEUE_LIFETIME
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    delay_notice_after: timedelta = DEFAULT_DELAY_NOTICE_AFTER
    jitter: float = 0.1


@dataclass(frozen=True)
class RecipientState:
    """The part of a recipient document a decision depends on."""

    attempts: int  # attempts made before this one
    queued_at: datetime  # when it entered the queue (release time for scheduled sends)
    delay_notice_sent: bool = False


@dataclass(frozen=True)
class Decision:
    status: str  # sent | deferred | bounced | expired
    attempts: int  # attempts made, this one included
    next_attempt_at: datetime | None  # only for deferred
    bounce_class: str | None
    rule: str | None  # the bounce rule that matched, for auditing
    suppress: bool  # a hard bounce: add the address to the suppression list
    notice: str | None  # the DSN the sender is owed now: "failure" | "delay" | None

    @property
    def event_type(self) -> str:
        return self.status


def decide(
    reply: SmtpOutcome,
    state: RecipientState,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """The recipient's fate after an attempt that got ``reply`` (code 0: no reply at all).

    2xx → sent. A permanent failure → bounced (suppressed only for the address classes of
    app/domain/bounces.py). A temporary failure → deferred on the retry schedule, capped at the
    end of the queue lifetime so the last try happens right then; once the lifetime is over the
    recipient expires (Postfix's maximal_queue_lifetime: give up on a *failed* attempt).
    """
    attempts = state.attempts + 1
    if 200 <= reply.code < 300:
        return Decision("sent", attempts, None, None, None, False, None)
    verdict = classify(reply)
    if verdict.permanent:
        return Decision(
            "bounced",
            attempts,
            None,
            verdict.bounce_class.value,
            verdict.rule,
            verdict.suppress,
            "failure",
        )
    if is_expired(state.queued_at, now, policy.lifetime):
        return Decision(
            "expired", attempts, None, verdict.bounce_class.value, verdict.rule, False, "failure"
        )
    delay = next_delay(attempts, schedule=policy.schedule, jitter=policy.jitter, rng=rng)
    retry_at = min(now + timedelta(seconds=delay), state.queued_at + policy.lifetime)
    notice = (
        "delay"
        if should_send_delay_notice(
            state.queued_at, now, state.delay_notice_sent, policy.delay_notice_after
        )
        else None
    )
    return Decision(
        "deferred", attempts, retry_at, verdict.bounce_class.value, verdict.rule, False, notice
    )


def policy_from(
    lifetime_seconds: int, schedule: Sequence[int], delay_notice_seconds: int
) -> RetryPolicy:
    """A policy from settings (seconds)."""
    return RetryPolicy(
        lifetime=timedelta(seconds=lifetime_seconds),
        schedule=tuple(float(s) for s in schedule) or DEFAULT_SCHEDULE,
        delay_notice_after=timedelta(seconds=delay_notice_seconds),
    )


def reply_text(reply: SmtpOutcome) -> str:
    """The reply as one line, "550 5.1.1 text" (what RecipientStatus.lastReply shows)."""
    parts = [str(reply.code) if reply.code != NO_REPLY else "", reply.enhanced or "", reply.text]
    return " ".join(p for p in parts if p)


def dsn_report(
    address: str, reply: SmtpOutcome, decision: Decision, remote_mta: str | None
) -> RecipientReport:
    """The RFC 3464 per-recipient fields for a failure or delay notice.

    Status is the remote's enhanced code when it gave one, else the class of its basic code;
    a recipient that expired after temporary errors keeps the last 4.x.x status with action
    "failed" (RFC 3464 §2.3.3 allows it; Postfix does the same).
    """
    action = "delayed" if decision.status == "deferred" else "failed"
    if reply.enhanced:
        status = reply.enhanced
    elif reply.code == NO_REPLY:
        status = "4.4.1"  # RFC 3463: no answer from host
    else:
        status = f"{reply.code // 100}.0.0"
    # "Diagnostic-Code: smtp; ..." must be an SMTP reply (RFC 3464 §2.3.6): none without one.
    diagnostic = reply_text(reply) if reply.code != NO_REPLY else None
    return RecipientReport(
        final_recipient=address,
        action=action,
        status=status,
        diagnostic_code=diagnostic,
        remote_mta=remote_mta,
    )


def status_event(message_id: ObjectId, recipient: dict[str, Any]) -> tuple[str, str]:
    """The live-status event for a recipient doc: (channel, JSON) for the sender's channel.

    Same fields as GraphQL ``RecipientStatus`` (camelCase) so a client can merge it as is.
    """
    reply = recipient.get("last_reply") or None
    last = (
        " ".join(str(p) for p in (reply.get("code"), reply.get("enhanced"), reply.get("text")) if p)
        if reply
        else None
    )
    pending = recipient["delivery_status"] in UNFINISHED
    next_at = recipient.get("next_attempt_at") if pending else None
    body = {
        "type": "delivery",
        "messageId": str(message_id),
        "recipientId": str(recipient["_id"]),  # the realtime subscription re-reads the doc by it
        "recipient": {
            "address": recipient["address"],
            "type": recipient.get("type", "to"),
            "status": recipient["delivery_status"],
            "attempts": int(recipient.get("attempts") or 0),
            "lastReply": last or None,
            "bounceClass": recipient.get("bounce_class"),
            "nextAttemptAt": next_at.isoformat() if next_at else None,
            "updatedAt": recipient["updated_at"].isoformat(),
        },
    }
    return f"user:{recipient['sender_user_id']}", json.dumps(body, separators=(",", ":"))
