from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from app.domain.errors import ValidationError
from app.domain.folders import Folder as FolderValue
from app.services.mailbox.changes import StateChange
from app.services.sending.compose import DRAFT_FIELDS, Composition
from app.services.templates.sending import TemplateRef as TemplateSend
from schema import types as T
from schema.templates import TemplateRef


@strawberry.input
class SendEmailInput:
    to: list[str]
    subject: str | None = strawberry.field(
        default=None, description="Required unless `template` is given (then it overrides)."
    )
    from_: str | None = strawberry.field(default=None, name="from")
    cc: list[str] | None = strawberry.field(default_factory=list)
    bcc: list[str] | None = strawberry.field(default_factory=list)
    text: str | None = None
    html: str | None = None
    attachment_ids: list[strawberry.ID] | None = strawberry.field(default_factory=list)
    in_reply_to: strawberry.ID | None = None
    idempotency_key: str | None = None
    send_at: datetime | None = None
    transactional: bool = strawberry.field(
        default=False,
        description="Receipts, password resets: expires from the queue sooner "
        "(MAILHUB_TRANSACTIONAL_LIFETIME_SECONDS) and is not held by a reputation pause, "
        "which stops bulk mail only.",
    )
    template: TemplateRef | None = strawberry.field(
        default=None, description="Render subject/text/html from a template (issue 14)."
    )

    def composition(self) -> Composition:
        return Composition(
            to=list(self.to),
            cc=list(self.cc or []),
            bcc=list(self.bcc or []),
            subject=self.subject or "",
            text=self.text,
            html=self.html,
            from_=self.from_,
            attachment_ids=[str(a) for a in self.attachment_ids or []],
            in_reply_to=str(self.in_reply_to) if self.in_reply_to else None,
            idempotency_key=self.idempotency_key,
            send_at=self.send_at,
            transactional=self.transactional,
        )


@strawberry.input(
    description="With an id, only the fields given change: null clears a field, an absent "
    "field keeps its saved value (CONTRACT.md, Drafts: partial updates)."
)
class DraftInput:
    # UNSET (absent) is not None (null): the difference is the partial-update rule
    id: strawberry.ID | None = strawberry.UNSET
    from_: str | None = strawberry.field(default=strawberry.UNSET, name="from")
    to: list[str] | None = strawberry.UNSET
    cc: list[str] | None = strawberry.UNSET
    bcc: list[str] | None = strawberry.UNSET
    subject: str | None = strawberry.UNSET
    text: str | None = strawberry.UNSET
    html: str | None = strawberry.UNSET
    attachment_ids: list[strawberry.ID] | None = strawberry.UNSET
    in_reply_to: strawberry.ID | None = strawberry.UNSET

    def present(self) -> frozenset[str]:
        """The draft fields the client sent (null included)."""
        return frozenset(
            name for name in DRAFT_FIELDS if getattr(self, name) is not strawberry.UNSET
        )

    def composition(self) -> Composition:
        """The given fields; absent and null ones as their empty value."""

        def given(name: str) -> Any:
            value = getattr(self, name)
            return None if value is strawberry.UNSET else value

        return Composition(
            to=list(given("to") or []),
            cc=list(given("cc") or []),
            bcc=list(given("bcc") or []),
            subject=given("subject") or "",
            text=given("text"),
            html=given("html"),
            from_=given("from_"),
            attachment_ids=[str(a) for a in given("attachment_ids") or []],
            in_reply_to=str(given("in_reply_to")) if given("in_reply_to") else None,
        )


@strawberry.input
class MessageStateInput:
    read: bool | None = None
    starred: bool | None = None
    folder: FolderValue | None = None
    add_labels: list[str] | None = None
    remove_labels: list[str] | None = None


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def login(self, info: Info, email: str, password: str) -> T.LoginResult:
        token, user = await info.context.system.accounts.login(email, password, info.context.client)
        return T.LoginSuccess(
            token=token,
            user=T.User(
                id=strawberry.ID(str(user["_id"])), email=user["email"], name=user.get("name")
            ),
        )

    @strawberry.mutation
    async def send_email(self, info: Info, input: SendEmailInput) -> T.SendEmailResult:
        system, viewer = info.context.system, await info.context.viewer()
        if input.template is not None:  # render, then the same send use case
            ref = input.template
            item = await system.template_sender.send_email(
                viewer,
                input.composition(),
                TemplateSend(key=ref.key, version=ref.version, variables=ref.variables),
            )
        else:
            if input.subject is None:
                raise ValidationError.on("subject", "give a subject (or a template)")
            item = await system.sending.send_email(viewer, input.composition())
        return T.SendEmailSuccess(item=T.MailboxItem(doc=item))

    @strawberry.mutation
    async def save_draft(self, info: Info, input: DraftInput) -> T.DraftResult:
        item = await info.context.system.drafts.save_draft(
            await info.context.viewer(),
            str(input.id) if input.id else None,
            input.composition(),
            input.present(),
        )
        return T.DraftSuccess(item=T.MailboxItem(doc=item))

    @strawberry.mutation
    async def delete_draft(self, info: Info, id: strawberry.ID) -> T.DeleteResult:
        ids = await info.context.system.drafts.delete_draft(await info.context.viewer(), str(id))
        return T.DeleteSuccess(ids=[strawberry.ID(i) for i in ids])

    @strawberry.mutation
    async def send_draft(self, info: Info, id: strawberry.ID) -> T.SendEmailResult:
        item = await info.context.system.drafts.send_draft(await info.context.viewer(), str(id))
        return T.SendEmailSuccess(item=T.MailboxItem(doc=item))

    @strawberry.mutation
    async def update_messages(
        self, info: Info, ids: list[strawberry.ID], set: MessageStateInput
    ) -> T.UpdateMessagesResult:
        change = StateChange(
            read=set.read,
            starred=set.starred,
            folder=set.folder.value if set.folder else None,
            add_labels=tuple(set.add_labels or ()),
            remove_labels=tuple(set.remove_labels or ()),
        )
        items = await info.context.system.mailbox_changes.update_items(
            await info.context.viewer(), [str(i) for i in ids], change
        )
        return T.UpdateMessagesSuccess(items=[T.MailboxItem(doc=d) for d in items])

    @strawberry.mutation(description="Only items in TRASH or SPAM (and drafts).")
    async def delete_forever(self, info: Info, ids: list[strawberry.ID]) -> T.DeleteResult:
        deleted = await info.context.system.mailbox_changes.delete_forever(
            await info.context.viewer(), [str(i) for i in ids]
        )
        return T.DeleteSuccess(ids=[strawberry.ID(i) for i in deleted])
