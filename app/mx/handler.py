"""The MX's decisions per SMTP command (aiosmtpd handler protocol), each calling a service.

Replies carry RFC 3463 enhanced status codes (we advertise ENHANCEDSTATUSCODES, RFC 2034).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from app.domain.errors import DomainError, ServiceUnavailable
from app.mx.limits import ClientLimits
from app.services import monitoring
from app.services.inbound.pipeline import Envelope, InboundService, LocalRecipient, Rejected

log = structlog.get_logger(__name__)

TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"


class MxHandler:
    def __init__(
        self, inbound: InboundService, limits: ClientLimits, *, max_recipients: int
    ) -> None:
        self.inbound = inbound
        self.limits = limits
        self.max_recipients = max_recipients
        self.in_flight = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # No AUTH on an MX (submission is the API); PIPELINING (RFC 2920) and ENHANCEDSTATUSCODES
        # (RFC 2034) are what aiosmtpd supports but does not announce.
        kept = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        return [*kept, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if not self.limits.allow_message(_ip(session)):
            return "421 4.7.0 Too many messages from your address, slow down"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.local_recipients = []
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # RFC 5321 §4.5.3.1.10: the client sends the rest in a later transaction
            return "452 4.5.3 Too many recipients"
        try:
            recipient = await self.inbound.resolve_recipient(address)
        except Rejected as e:
            return e.reply
        except DomainError:
            return TEMPFAIL
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        recipients: list[LocalRecipient] = getattr(envelope, "local_recipients", [])
        recipients.append(recipient)
        envelope.local_recipients = recipients
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        started = time.perf_counter()
        self.in_flight += 1
        outcome = "tempfail"
        try:
            receipt = await self.inbound.receive(
                Envelope(
                    _ip(session),
                    session.host_name or "",
                    envelope.mail_from or "",
                    tuple(getattr(envelope, "local_recipients", [])),
                ),
                envelope.original_content,
            )
            outcome = "accepted"
        except Rejected as e:
            outcome = "rejected"
            return e.reply
        except ServiceUnavailable as e:
            log.warning("DATA deferred", reason=e.message)
            return TEMPFAIL
        except Exception:
            log.exception("DATA failed")
            return TEMPFAIL
        finally:
            self.in_flight -= 1
            monitoring.inbound_data(outcome, time.perf_counter() - started)
        return f"250 2.0.0 OK {receipt.message_id or 'duplicate'}"


def _ip(session: Any) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
