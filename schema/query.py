from __future__ import annotations

import strawberry
from strawberry.types import Info

from app.domain.folders import Folder as FolderValue
from schema import types as T


def _folder(folder: FolderValue | None) -> str | None:
    return folder.value if folder is not None else None


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info) -> T.User:
        viewer = await info.context.viewer()
        return T.User(id=strawberry.ID(str(viewer.user_id)), email=viewer.email, name=viewer.name)

    @strawberry.field(description="Every folder, and every label in use, with total/unread counts.")
    async def mailboxes(self, info: Info) -> list[T.Mailbox]:
        docs = await info.context.system.mailbox.mailboxes(await info.context.viewer())
        return [T.Mailbox.of(d) for d in docs]

    @strawberry.field(description="Newest first. Without folder or label: the INBOX.")
    async def messages(
        self,
        info: Info,
        folder: FolderValue | None = None,
        label: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> T.MailboxItemConnection:
        page = await info.context.system.mailbox.list_items(
            await info.context.viewer(),
            folder=_folder(folder),
            label=label,
            first=first,
            after=after,
        )
        return T.MailboxItemConnection(
            edges=[
                T.MailboxItemEdge(cursor=c, node=T.MailboxItem(doc=d))
                for d, c in zip(page.nodes, page.cursors, strict=True)
            ],
            page_info=T.PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
            scope={"folder": _folder(folder), "label": label},
        )

    @strawberry.field
    async def message(self, info: Info, id: strawberry.ID) -> T.MailboxItem | None:
        doc = await info.context.system.mailbox.get_item(await info.context.viewer(), str(id))
        return T.MailboxItem(doc=doc) if doc else None

    @strawberry.field(description="Conversations, most recent activity first.")
    async def threads(
        self,
        info: Info,
        folder: FolderValue | None = None,
        label: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> T.ThreadConnection:
        page = await info.context.system.mailbox.list_threads(
            await info.context.viewer(),
            folder=_folder(folder),
            label=label,
            first=first,
            after=after,
        )
        return T.ThreadConnection(
            edges=[
                T.ThreadEdge(cursor=c, node=T.Thread(doc=d))
                for d, c in zip(page.nodes, page.cursors, strict=True)
            ],
            page_info=T.PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )

    @strawberry.field
    async def thread(self, info: Info, id: strawberry.ID) -> T.Thread | None:
        doc = await info.context.system.mailbox.get_thread(await info.context.viewer(), str(id))
        return T.Thread(doc=doc) if doc else None
