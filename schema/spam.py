"""markSpam / markNotSpam (CONTRACT.md): move the items and teach the viewer's filter."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from schema import types as T


@strawberry.type
class SpamMutation:
    @strawberry.mutation(description="Moves received items to SPAM and trains the viewer's filter.")
    async def mark_spam(self, info: Info, ids: list[strawberry.ID]) -> T.UpdateMessagesResult:
        items = await info.context.system.spam_feedback.mark(
            await info.context.viewer(), [str(i) for i in ids], True
        )
        return T.UpdateMessagesSuccess(items=[T.MailboxItem(doc=d) for d in items])

    @strawberry.mutation(description="Moves items back to INBOX and trains the viewer's filter.")
    async def mark_not_spam(self, info: Info, ids: list[strawberry.ID]) -> T.UpdateMessagesResult:
        items = await info.context.system.spam_feedback.mark(
            await info.context.viewer(), [str(i) for i in ids], False
        )
        return T.UpdateMessagesSuccess(items=[T.MailboxItem(doc=d) for d in items])
