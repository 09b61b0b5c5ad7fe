"""search(query, first, after): the viewer's mail matching a Gmail-style query (docs/search.md).

A bad query is a VALIDATION_ERROR naming the position; Typesense down is SERVICE_UNAVAILABLE
(both top-level errors with ``extensions.code``, as the field returns a connection).
"""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from app.domain.errors import ServiceUnavailable
from schema import types as T


@strawberry.type
class SearchHit:
    item: T.MailboxItem
    highlights: list[str] = strawberry.field(
        description="HTML-escaped snippets of the matched text, matches wrapped in <mark>."
    )


@strawberry.type
class SearchHitEdge:
    cursor: str
    node: SearchHit


@strawberry.type
class SearchConnection:
    edges: list[SearchHitEdge]
    page_info: T.PageInfo
    total_count: int


@strawberry.type
class SearchQuery:
    @strawberry.field(
        description="The viewer's messages matching a Gmail-style query, newest first: "
        "from: to: cc: bcc: subject: label: in: is: has:attachment filename: "
        "before: after: older_than: newer_than: larger: smaller:, quoted "
        "phrases, -negation, OR and parentheses. TRASH and SPAM only with in:."
    )
    async def search(
        self, info: Info, query: str, first: int = 20, after: str | None = None
    ) -> SearchConnection:
        viewer = await info.context.viewer()
        search = info.context.system.search
        if search is None:
            raise ServiceUnavailable("search is not configured", retry_after_seconds=60)
        page = await search.search(viewer, query, first=first, after=after)
        return SearchConnection(
            edges=[
                SearchHitEdge(
                    cursor=h.cursor,
                    node=SearchHit(item=T.MailboxItem(doc=h.item), highlights=h.highlights),
                )
                for h in page.hits
            ],
            page_info=T.PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
            total_count=page.total,
        )
