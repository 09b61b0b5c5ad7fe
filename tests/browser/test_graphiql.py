"""GraphiQL at GET /graphql works in a browser with no other host reachable (issue 13)."""

from __future__ import annotations

import json

from playwright.async_api import Page, expect

QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
HEADERS_EDITOR = 'section[aria-label="Headers"] .graphiql-editor:not(.hidden) .CodeMirror'
RESULT = ".graphiql-response"


async def type_into(page: Page, editor: str, text: str) -> None:
    """Replace an editor's text as a person would: focus, select all, type."""
    await page.locator(editor).click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.insert_text(text)


async def write_query(page: Page, query: str) -> None:
    """Type the query, then wait until GraphiQL has parsed it (its editor reports changes
    after a 100 ms debounce; our page then writes the query into ?q=): executing before that
    would run the previous operation."""
    await type_into(page, QUERY_EDITOR, query)
    await page.wait_for_function(
        "q => new URLSearchParams(location.search).get('q') === q", arg=query
    )


async def open_graphiql(page: Page, base: str) -> None:
    response = await page.goto(base + "/graphql")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    await expect(page.get_by_role("button", name="Execute query (Ctrl-Enter)")).to_be_visible()


async def test_graphiql_loads_offline_and_runs_a_query_with_the_token_in_the_headers_pane(
    mailhub, new_context, screenshot, request
):
    alice = await mailhub.user("alice")
    token = await mailhub.token(alice)
    _, page = await new_context("developer")
    await open_graphiql(page, mailhub.base)

    await page.locator(".graphiql-editor-tools button[data-name=headers]").click()
    await type_into(page, HEADERS_EDITOR, json.dumps({"Authorization": f"Bearer {token}"}))
    await write_query(page, "{ me { email } }")
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()

    await expect(page.locator(RESULT)).to_contain_text(f'"email": "{alice}"')
    # the explorer plugin lists the schema's root fields (introspection with the same page)
    await page.get_by_role("button", name="Show GraphiQL Explorer").click()
    await expect(page.locator(".graphiql-plugin")).to_contain_text("mailboxes")
    await screenshot(page, "graphiql-query")
    offline = request.node.offline
    assert offline.blocked == [], "GraphiQL tried to reach another host"
    assert offline.csp_violations() == [] and offline.page_errors == []


async def test_graphiql_without_a_token_shows_the_authentication_error(mailhub, new_context):
    _, page = await new_context("anonymous")
    await open_graphiql(page, mailhub.base)
    await write_query(page, "{ me { email } }")
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    await expect(page.locator(RESULT)).to_contain_text("UNAUTHENTICATED")


async def test_graphiql_runs_a_subscription_that_updates_live(
    mailhub, new_context, screenshot, request
):
    alice = await mailhub.user("alice")
    bob = await mailhub.user("bob")
    alice_token, bob_token = await mailhub.token(alice), await mailhub.token(bob)
    _, page = await new_context("developer")
    await open_graphiql(page, mailhub.base)
    await page.locator(".graphiql-editor-tools button[data-name=headers]").click()
    await type_into(page, HEADERS_EDITOR, json.dumps({"Authorization": f"Bearer {bob_token}"}))
    await write_query(page, "subscription { unreadCounts { folder unread } }")
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    result = page.locator(RESULT)
    # the snapshot on subscribe: an empty Inbox
    await expect(result).to_contain_text('"folder": "INBOX"')
    await expect(result).to_contain_text('"unread": 0')

    sent = await mailhub.gql(
        'mutation($to:[String!]!){sendEmail(input:{to:$to,subject:"Live?",text:"yes"})'
        "{__typename}}",
        {"to": [bob]},
        alice_token,
    )
    assert sent["data"]["sendEmail"]["__typename"] == "SendEmailSuccess"
    # the same subscription, over graphql-ws, now shows the unread message
    await expect(result).to_contain_text('"unread": 1')
    # the button now stops the running subscription
    await expect(page.get_by_role("button", name="Stop query (Ctrl-Enter)")).to_be_visible()
    await screenshot(page, "graphiql-subscription")
    offline = request.node.offline
    assert offline.blocked == [] and offline.csp_violations() == []
    assert offline.page_errors == []
