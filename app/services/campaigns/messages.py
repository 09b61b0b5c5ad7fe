"""A campaign recipient's message, rendered and built (issue 15), in the batch sender's process
or in a render helper process (``RenderHelpers``).

Rendering and building the MIME were more than half of the batch sender's CPU, and on the
event loop they held up the replies of the batch's transaction: with the renders in helper
processes the sender's loop does the database's side and the helpers the messages', at the
same time (docs/benchmarks.md, twenty-fourth session).

A helper gets the campaign's fields the messages need, the template version and the
recipients (id, address, variables), and answers each recipient's ``Built``: a helper holds the
secret the links are signed with (given it when it starts, never logged), compiles each
template version once, and renders with the same sandbox and limits as the sender's threads.
A helper that dies or does not answer in time is replaced, and the batch renders in the
sender's threads meanwhile: nothing is lost, only slower. A helper whose copy of this module is
not its sender's (``CODE``: the installed code changed since the worker started) does not
start (app/helper_processes.py), and the sender renders in its threads until it is restarted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import structlog
from bson import ObjectId

from app.domain.addresses import Address
from app.domain.campaign_tokens import (
    campaign_message_id,
    click_token,
    open_token,
    unsubscribe_mailbox,
    unsubscribe_token,
)
from app.domain.errors import ValidationError
from app.domain.html_safety import sanitize_html
from app.domain.mime import OutgoingMessage, build_mime
from app.domain.templates import Rendered, RenderLimits
from app.domain.tracking import add_pixel, rewrite_links
from app.helper_processes import HelperDied, HelperProcesses, code_of

log = structlog.get_logger(__name__)

CODE = code_of(__file__)  # a helper's copy of this module must be its sender's (see above)
HELPER_CHUNK = 100  # recipients a call to a helper (answers come back as they are done)
RETRY_SECONDS = 60.0  # after the helpers failed to start, before the next try
_FIELDS = ("_id", "from", "from_domain", "track_clicks", "track_opens", "variables")


class Built(NamedTuple):
    message: OutgoingMessage | None  # None: not built, or a helper's answer (``raw`` only)
    raw: bytes
    links: tuple[str, ...]  # the original URLs of the tracked links, by index
    error: str | None  # why it could not be rendered (else None)


@dataclass(frozen=True)
class Signing:
    """What a campaign message's links and ids are made with."""

    base_url: str
    secret: bytes = field(repr=False)  # never in a log line or a traceback's locals
    hostname: str = ""


def build(
    campaign: dict[str, Any],
    rid: ObjectId,
    email: str,
    rendered: Rendered | ValidationError,
    now: datetime,
    signing: Signing,
) -> Built:
    """The recipient's message and MIME bytes with its tracked links, or why it cannot be
    rendered (``error``)."""
    if isinstance(rendered, ValidationError):
        return Built(None, b"", (), rendered.message)
    base = signing.base_url.rstrip("/")
    secret = signing.secret
    html = rendered.html
    links: tuple[str, ...] = ()
    if html and campaign.get("track_clicks"):
        tracked = rewrite_links(html, lambda i: f"{base}/t/c/{click_token(secret, rid, i)}")
        html = tracked.html
        links = tuple(tracked.links)
    if html and campaign.get("track_opens"):
        html = add_pixel(html, f"{base}/t/o/{open_token(secret, rid)}")
    token = unsubscribe_token(secret, rid)  # (one HMAC for both)
    unsubscribe = (
        f"<{base}/u/{token}>, <mailto:{unsubscribe_mailbox(token, campaign['from_domain'])}>"
    )
    outgoing = OutgoingMessage(
        from_=Address(campaign["from"]["email"], campaign["from"].get("name")),
        to=(Address(email, None),),
        subject=rendered.subject,
        text=rendered.text_part(),
        html=sanitize_html(html) if html else None,  # once, for MIME and the stored body
        message_id=campaign_message_id(rid, campaign["_id"], signing.hostname),
        date=now,
        extra_headers=(
            ("List-Unsubscribe", unsubscribe),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ),
    )
    try:
        return Built(outgoing, build_mime(outgoing), links, None)
    except ValidationError as e:
        return Built(None, b"", (), e.message)


# --- in a helper process ---------------------------------------------------------------

_helper: dict[str, Any] = {}


def _start_helper(limits: RenderLimits, signing: Signing) -> None:
    from app.services.templates.render import TemplateRenderer

    _helper["renderer"] = TemplateRenderer(None, limits, threads=1)  # type: ignore[arg-type]
    _helper["signing"] = signing


def _render_in_helper(
    campaign: dict[str, Any],
    version: dict[str, Any],
    rows: list[tuple[ObjectId, str, dict[str, Any]]],
    now: datetime,
) -> list[Built]:
    renderer = _helper["renderer"]
    shared = campaign.get("variables") or {}
    answers = renderer.render_here([(version, {**shared, **variables}) for _, _, variables in rows])
    signing = _helper["signing"]
    # the bytes without the message: a remote recipient's row needs only them, and the
    # message's bodies would cross the pipe and be unpickled by the sender's loop a second
    # time (the sender builds a hosted recipient's message itself)
    return [
        build(campaign, rid, email, answer, now, signing)._replace(message=None)
        for (rid, email, _), answer in zip(rows, answers, strict=True)
    ]


class RenderHelpers:
    """``count`` render helper processes, started at the first batch that asks for them."""

    def __init__(self, count: int, limits: RenderLimits, signing: Signing) -> None:
        self.count = count
        self.limits = limits
        self.signing = signing
        self._pool: HelperProcesses | None = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0  # loop time the last start failed

    async def render(
        self,
        campaign: dict[str, Any],
        version: dict[str, Any],
        rows: list[tuple[ObjectId, str, dict[str, Any]]],
        now: datetime,
    ) -> list[Built] | None:
        """Each row's ``Built``, in order; None when no helper can render them (none
        configured, none started, or one died or overran with these): the caller renders."""
        pool = await self._started()
        if pool is None:
            return None
        view = {k: campaign.get(k) for k in _FIELDS}
        chunks = [rows[i : i + HELPER_CHUNK] for i in range(0, len(rows), HELPER_CHUNK)]
        # a render stops itself at its deadline; this only bounds a helper that does not
        bound = self.limits.max_seconds * len(rows) + 5.0
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(pool.call(view, version, c, now) for c in chunks)), bound
            )
        except (HelperDied, TimeoutError) as e:
            log.warning("campaign render helper failed: rendering here", error=repr(e))
            await self.close()  # the next batch starts fresh helpers
            return None
        return [b for chunk in answers for b in chunk]

    async def _started(self) -> HelperProcesses | None:
        if self.count < 1:
            return None
        async with self._lock:
            if self._pool is not None:
                return self._pool
            loop = asyncio.get_running_loop()
            if self._failed_at and loop.time() - self._failed_at < RETRY_SECONDS:
                return None
            pool = HelperProcesses(
                self.count,
                _render_in_helper,
                _start_helper,
                (self.limits, self.signing),
                name="campaign-render",
            )
            try:
                await pool.start()
            except Exception as e:
                self._failed_at = loop.time()
                log.warning("campaign render helpers did not start", error=repr(e))
                return None
            self._pool = pool
            return pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()
