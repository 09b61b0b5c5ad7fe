"""No N+1: a page of items costs a bounded number of database round trips, whatever its size."""

import pytest
from pymongo import monitoring

from app.bootstrap import build_system
from tests.e2e.test_send_and_read import SEND
from tests.support.commands import CommandLog

FULL_PAGE = """query($first: Int!) { messages(first: $first) { totalCount edges { node {
  id subject textBody htmlBody bcc { email } replyTo { email } references inReplyTo
  attachments { id filename } recipients { status } } } } }"""
THREADS = "query($first: Int!) { threads(first: $first) { edges { node { subject messages { id textBody } } } } }"


@pytest.fixture
def counter():
    c = CommandLog()
    monitoring.register(c)
    yield c
    c.active = False
    c.clear()


async def test_page_cost_does_not_grow_with_page_size(api, settings, counter):
    # a System built after the listener is registered, so its client reports every command
    system = await build_system(settings)
    try:
        alice, a = await api.user("alice")
        bob, b = await api.user("bob")
        for i in range(30):
            await api.gql(
                SEND, {"input": {"to": [bob], "cc": [alice], "subject": f"s{i}", "text": "x"}}, a
            )

        from schema import build_schema
        from schema.context import Context

        schema = build_schema(settings)

        async def cost(query, first, token):
            ctx = Context(system=system, token=token, client="test")
            counter.clear()
            result = await schema.execute(
                query, variable_values={"first": first}, context_value=ctx
            )
            assert not result.errors, result.errors
            return len([c for c in counter.names if c in ("find", "aggregate", "count")])

        small, large = await cost(FULL_PAGE, 2, b), await cost(FULL_PAGE, 30, b)
        assert small == large <= 5, (small, large)
        small, large = await cost(THREADS, 2, b), await cost(THREADS, 30, b)
        assert small == large <= 5, (small, large)
    finally:
        await system.close()


THREAD_BODIES = """query($id: ID!) { thread(id: $id) { messages {
  id ... on MailboxItem { textBody } ...Content } } }
fragment Content on MailboxItem { htmlBody inReplyTo references attachments { filename } }"""
ONE = """query($id: ID!) { message(id: $id) { id textBody htmlBody inReplyTo references
  attachments { filename } } }"""


async def test_thread_bodies_loaded_with_the_list_match_the_single_message_reads(api):
    """A thread's message documents are loaded with its items when the selection (fragments
    included) reads content; what that gives must be what a single-message read gives."""
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    first = await api.gql(
        SEND, {"input": {"to": [bob], "subject": "plan", "text": "one", "html": "<p>one</p>"}}, a
    )
    thread_id = first["data"]["sendEmail"]["item"]["threadId"]
    await api.gql(SEND, {"input": {"to": [bob], "subject": "Re: plan", "text": "two"}}, a)
    thread = (await api.gql(THREAD_BODIES, {"id": thread_id}, a))["data"]["thread"]
    assert len(thread["messages"]) == 2
    for item in thread["messages"]:
        single = (await api.gql(ONE, {"id": item["id"]}, a))["data"]["message"]
        assert item == single
    assert thread["messages"][0]["textBody"].strip() == "one"
    assert "<p>one</p>" in thread["messages"][0]["htmlBody"]
