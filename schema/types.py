"""GraphQL types of CONTRACT.md. Each wraps a stored document; content the folder page does
not carry (bodies, attachments, recipients) comes through the request's batch loaders.

One module although over 400 lines: the object types of CONTRACT.md's core schema refer to each
other (a mailbox item, its thread, its recipients); newer features keep their types in their own
modules (schema/campaigns.py, schema/templates.py, …).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from app.domain.folders import Folder as FolderValue
from app.domain.html_safety import sanitize_html
from app.domain.outcomes import UNFINISHED

Folder = strawberry.enum(FolderValue, name="Folder")


@strawberry.type
class Address:
    name: str | None
    email: str

    @staticmethod
    def of(doc: dict[str, Any] | None) -> Address:
        doc = doc or {}
        return Address(name=doc.get("name"), email=doc.get("email") or "")


def addresses(docs: list[dict[str, Any]] | None) -> list[Address]:
    return [Address.of(d) for d in docs or []]


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    name: str | None

    @strawberry.field(description="Every address of the viewer (primary first), usable as `from`.")
    async def addresses(self, info: Info) -> list[str]:
        from bson import ObjectId

        return await info.context.system.accounts.addresses_of(ObjectId(str(self.id)))


@strawberry.type
class Mailbox:
    id: strawberry.ID
    name: str
    folder: FolderValue | None
    is_label: bool
    total: int
    unread: int

    @staticmethod
    def of(d: dict[str, Any]) -> Mailbox:
        return Mailbox(
            id=strawberry.ID(d["id"]),
            name=d["name"],
            folder=FolderValue(d["folder"]) if d["folder"] else None,
            is_label=d["is_label"],
            total=d["total"],
            unread=d["unread"],
        )


@strawberry.type
class Attachment:
    id: strawberry.ID
    filename: str
    content_type: str
    size: int
    sha256: str
    download_url: str


@strawberry.type
class RecipientStatus:
    address: str
    type: str
    status: str
    attempts: int
    last_reply: str | None
    bounce_class: str | None
    next_attempt_at: datetime | None
    updated_at: datetime

    @staticmethod
    def of(d: dict[str, Any]) -> RecipientStatus:
        reply = d.get("last_reply")
        text = None
        if reply:
            text = " ".join(
                str(p) for p in (reply.get("code"), reply.get("enhanced"), reply.get("text")) if p
            )
        pending = d["delivery_status"] in UNFINISHED
        return RecipientStatus(
            address=d["address"],
            type=d["type"],
            status=d["delivery_status"],
            attempts=d.get("attempts", 0),
            last_reply=text,
            bounce_class=d.get("bounce_class"),
            next_attempt_at=d.get("next_attempt_at") if pending else None,
            updated_at=d["updated_at"],
        )


@strawberry.type
class SpamVerdict:
    is_spam: bool
    score: float
    model_version: str
    reasons: list[str]
    probable: bool = strawberry.field(
        description="Probably spam: kept in the Inbox with a visible flag, at the recipient's "
        "own threshold (moved by their markSpam / markNotSpam). Never true with isSpam."
    )


@strawberry.type
class MailboxItem:
    """One view. The summary fields are plain attributes filled from the view document (the
    cheap path in Strawberry: no resolver call per field per item); content fields resolve
    lazily through the request's batch loaders."""

    doc: strawberry.Private[dict[str, Any]]
    # the message document, when it was loaded together with the list (see with_messages)
    message_doc: strawberry.Private[dict[str, Any] | None] = None
    id: strawberry.ID = strawberry.ID("")
    message_id: strawberry.ID = strawberry.ID("")
    thread_id: strawberry.ID = strawberry.ID("")
    folder: FolderValue = FolderValue.INBOX
    labels: list[str] = strawberry.field(default_factory=list)
    read: bool = False
    starred: bool = False
    received_at: datetime = datetime.min
    from_: Address = strawberry.field(name="from", default=None)  # type: ignore[assignment]
    subject: str = ""
    snippet: str = ""
    has_attachments: bool = False
    size: int = 0

    def __post_init__(self) -> None:
        d = self.doc
        self.id = strawberry.ID(str(d["_id"]))
        self.message_id = strawberry.ID(str(d["message_id"]))
        self.thread_id = strawberry.ID(str(d["thread_id"]))
        self.folder = FolderValue(d["folder"])
        self.labels = list(d.get("labels") or [])
        self.read = bool(d.get("read"))
        self.starred = bool(d.get("starred"))
        self.received_at = d["received_at"]
        self.from_ = Address.of(d.get("from"))
        self.subject = d.get("subject") or ""
        self.snippet = d.get("snippet") or ""
        self.has_attachments = bool(d.get("has_attachments"))
        self.size = int(d.get("size") or 0)

    @strawberry.field
    def to(self) -> list[Address]:
        return addresses(self.doc.get("to"))

    @strawberry.field
    def cc(self) -> list[Address]:
        return addresses(self.doc.get("cc"))

    # Content fields read the message document. When a list loaded the documents with its
    # items (with_messages), they complete at once; otherwise they wait for the request's
    # batch loader. Each returns its value or an awaitable of it; graphql-core takes both.

    @strawberry.field(description="Empty unless the viewer sent the message.")
    def bcc(self, info: Info) -> list[Address]:
        if self.doc.get("role") not in ("sent", "draft"):
            return []
        return self._from_message(info, lambda m: addresses(m.get("bcc")))

    @strawberry.field
    def reply_to(self, info: Info) -> list[Address]:
        return self._from_message(info, lambda m: addresses(m.get("reply_to")))

    @strawberry.field
    def text_body(self, info: Info) -> str | None:
        message = self.message_doc
        if message is not None and not message.get("text_blob_id"):
            return message.get("text_body")  # type: ignore[no-any-return]
        return self._text_body(info)  # type: ignore[return-value]

    async def _text_body(self, info: Info) -> str | None:
        message = await self._message(info)
        return await info.context.system.content.text_body(message)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Sanitized: no scripts, handlers, forms or frames; remote images "
        "carry data-remote-image so a client can block them."
    )
    def html_body(self, info: Info) -> str | None:
        message = self.message_doc
        if message is not None and not message.get("html_blob_id"):
            html = message.get("html_body")
            return sanitize_html(html) if html else None
        return self._html_body(info)  # type: ignore[return-value]

    async def _html_body(self, info: Info) -> str | None:
        message = await self._message(info)
        html = await info.context.system.content.html_body(message)
        return sanitize_html(html) if html else None

    @strawberry.field
    def rfc822_message_id(self, info: Info) -> str | None:
        return self._from_message(info, lambda m: m.get("rfc822_message_id"))

    @strawberry.field
    def in_reply_to(self, info: Info) -> str | None:
        return self._from_message(info, lambda m: m.get("in_reply_to"))

    @strawberry.field
    def references(self, info: Info) -> list[str]:
        return self._from_message(info, lambda m: list(m.get("references") or []))

    @strawberry.field(
        description="The original RFC 822 bytes (GET with the bearer token, message/rfc822); "
        "null for a draft, which has none until it is sent."
    )
    def raw_url(self, info: Info) -> str | None:
        if self.doc.get("role") == "draft":
            return None
        return f"{info.context.system.settings.base_url}/api/emails/{self.id}/raw"

    @strawberry.field
    def attachments(self, info: Info) -> list[Attachment]:
        base = info.context.system.settings.base_url
        return self._from_message(
            info,
            lambda m: [
                Attachment(
                    id=strawberry.ID(str(a["id"])),
                    filename=a["filename"],
                    content_type=a["content_type"],
                    size=a["size"],
                    sha256=a["sha256"],
                    download_url=f"{base}/api/attachments/{a['id']}",
                )
                for a in m.get("attachments") or []
            ],
        )

    @strawberry.field(description="Per-recipient delivery state; empty unless the viewer sent it.")
    async def recipients(self, info: Info) -> list[RecipientStatus]:
        if self.doc.get("role") != "sent":
            return []
        docs = await info.context.loader("recipients").load(self.doc["message_id"])
        return [RecipientStatus.of(d) for d in docs]

    @strawberry.field
    def spam(self) -> SpamVerdict | None:
        s = self.doc.get("spam")
        if not s:
            return None
        return SpamVerdict(
            is_spam=s["is_spam"],
            score=s["score"],
            model_version=s["model_version"],
            reasons=list(s.get("reasons") or []),
            probable=bool(s.get("probable")),  # verdicts stored before it existed: not flagged
        )

    @strawberry.field
    def auth_results(self, info: Info) -> str | None:
        if self.doc.get("role") != "received":
            return None
        return self._from_message(info, lambda m: m.get("auth_results"))

    def _from_message(self, info: Info, pick: Callable[[dict[str, Any]], Any]) -> Any:
        """``pick(message)`` now if the message was loaded with the list, else an awaitable."""
        if self.message_doc is not None:
            return pick(self.message_doc)

        async def later() -> Any:
            return pick(await self._message(info))

        return later()

    async def _message(self, info: Info) -> dict[str, Any]:
        return await info.context.loader("messages").load(self.doc["message_id"]) or {}


# The MailboxItem fields that read the message document (not the mailbox item).
MESSAGE_FIELDS = frozenset(
    {
        "bcc",
        "replyTo",
        "textBody",
        "htmlBody",
        "rfc822MessageId",
        "inReplyTo",
        "references",
        "attachments",
        "authResults",
    }
)


def selects_message_content(selections: Any) -> bool:
    """Whether a selection (fragments included) asks for a field of MESSAGE_FIELDS."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name in MESSAGE_FIELDS:
                return True
        elif selects_message_content(selection.selections):  # a fragment
            return True
    return False


async def with_messages(info: Info, docs: list[dict[str, Any]]) -> list[MailboxItem]:
    """Items for ``docs``; their message documents loaded in the same batch when the
    selection reads message content, so a thread's bodies cost one query and no
    per-item awaiting."""
    if not docs or not selects_message_content(info.selected_fields[0].selections):
        return [MailboxItem(doc=d) for d in docs]
    messages = await info.context.loader("messages").load_many([d["message_id"] for d in docs])
    return [MailboxItem(doc=d, message_doc=m or {}) for d, m in zip(docs, messages, strict=True)]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class MailboxItemEdge:
    cursor: str
    node: MailboxItem


@strawberry.type
class MailboxItemConnection:
    edges: list[MailboxItemEdge]
    page_info: PageInfo
    scope: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Items in the folder or label (read only when asked for).")
    async def total_count(self, info: Info) -> int:
        return await info.context.system.mailbox.count(await info.context.viewer(), **self.scope)  # type: ignore[no-any-return]


@strawberry.type
class Thread:
    doc: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field
    def subject(self) -> str:
        return self.doc.get("subject") or ""

    @strawberry.field
    def participants(self) -> list[Address]:
        return addresses(self.doc.get("participants"))

    @strawberry.field
    def message_count(self) -> int:
        return int(self.doc.get("message_count") or 0)

    @strawberry.field
    def unread_count(self) -> int:
        return int(self.doc.get("unread_count") or 0)

    @strawberry.field
    def latest_at(self) -> datetime:
        return self.doc["latest_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="Oldest first.")
    async def messages(self, info: Info) -> list[MailboxItem]:
        docs = await info.context.loader("thread_items").load(self.doc["_id"])
        return await with_messages(info, docs)


@strawberry.type
class ThreadEdge:
    cursor: str
    node: Thread


@strawberry.type
class ThreadConnection:
    edges: list[ThreadEdge]
    page_info: PageInfo


# --- mutation results (CONTRACT.md: a success type or a typed error) ------------------------


@strawberry.type
class FieldError:
    field: str
    message: str


@strawberry.type(name="ValidationError")
class ValidationErrorType:
    message: str
    fields: list[FieldError]


@strawberry.type(name="NotFound")
class NotFoundType:
    message: str


@strawberry.type(name="RateLimited")
class RateLimitedType:
    message: str
    retry_after_seconds: int


@strawberry.type(name="AuthError")
class AuthErrorType:
    message: str


@strawberry.type
class LoginSuccess:
    token: str
    user: User


@strawberry.type
class SendEmailSuccess:
    item: MailboxItem


@strawberry.type
class DraftSuccess:
    item: MailboxItem


@strawberry.type
class UpdateMessagesSuccess:
    items: list[MailboxItem]


@strawberry.type
class DeleteSuccess:
    ids: list[strawberry.ID]


LoginResult = Annotated[LoginSuccess | AuthErrorType, strawberry.union("LoginResult")]
SendEmailResult = Annotated[
    SendEmailSuccess | ValidationErrorType | RateLimitedType | NotFoundType,
    strawberry.union("SendEmailResult"),
]
DraftResult = Annotated[
    DraftSuccess | ValidationErrorType | NotFoundType, strawberry.union("DraftResult")
]
UpdateMessagesResult = Annotated[
    UpdateMessagesSuccess | ValidationErrorType | NotFoundType,
    strawberry.union("UpdateMessagesResult"),
]
DeleteResult = Annotated[DeleteSuccess | NotFoundType, strawberry.union("DeleteResult")]
