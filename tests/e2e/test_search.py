"""Search through the API: indexing follows mail flow, results are live and confined to the
viewer, bad queries and a Typesense outage are typed errors, reindex keeps search answering."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest
from bson import ObjectId

from app.adapters.typesense_index import TypesenseIndex
from app.cli import reindex_command
from app.embedded import free_port
from jobs.worker import start_embedded_worker

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) { __typename
  ... on SendEmailSuccess { item { id } } ... on ValidationError { message } } }"""
SEARCH = """query($q: String!, $first: Int, $after: String) {
  search(query: $q, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor }
  edges { cursor node { highlights item { id subject folder read labels bcc { email } } } } } }"""
UPDATE = """mutation($ids: [ID!]!, $set: MessageStateInput!) {
  updateMessages(ids: $ids, set: $set) { __typename } }"""
DELETE = "mutation($ids: [ID!]!) { deleteForever(ids: $ids) { __typename } }"


@pytest.fixture(autouse=True)
async def drop_search_index(system):  # type: ignore[no-untyped-def]
    yield
    await system.search.index.drop_all()


async def send(api, token, **fields):  # type: ignore[no-untyped-def]
    body = await api.gql(SEND, {"input": {"text": "", **fields}}, token)
    assert body["data"]["sendEmail"]["__typename"] == "SendEmailSuccess", body
    return body["data"]["sendEmail"]["item"]["id"]


async def search(api, token, q, **variables):  # type: ignore[no-untyped-def]
    return (await api.gql(SEARCH, {"q": q, **variables}, token))["data"]["search"]


async def found(api, token, q):  # type: ignore[no-untyped-def]
    return {e["node"]["item"]["subject"] for e in (await search(api, token, q, first=100))["edges"]}


async def index_everything(system):  # type: ignore[no-untyped-def]
    """What the jobs do, run inline: the sweep indexes every item behind the index."""
    await system.search.indexer.repair()


async def test_sent_mail_is_searchable_by_both_sides_within_a_second(api, settings, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    stop = await start_embedded_worker(settings, system)
    try:
        started = time.monotonic()
        await send(
            api, a, to=[bob], subject="Quarterly invoice", text="Please pay the invoice by Friday."
        )
        while not await found(api, b, "invoice"):
            assert time.monotonic() - started < 5, "not searchable after 5 s"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 2.5  # 1 s target; CI machines are slow and shared
        assert await found(api, a, "invoice friday") == {"Quarterly invoice"}
        hit = (await search(api, b, '"pay the invoice"'))["edges"][0]["node"]
        assert any("<mark>invoice</mark>" in h for h in hit["highlights"])
        # A state change reaches the index through the same jobs.
        await api.gql(UPDATE, {"ids": [hit["item"]["id"]], "set": {"addLabels": ["Billing"]}}, b)
        while not await found(api, b, "label:billing"):
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.05)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # arq closes its redis pool with close()
            await stop()


async def test_results_carry_live_state_and_never_show_deleted_items(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await send(api, a, to=[bob], subject="Travel plans", text="Flight to Lisbon")
    await send(api, a, to=[bob], subject="Lisbon hotel", text="Booking attached")
    await index_everything(system)
    edges = (await search(api, b, "lisbon"))["edges"]
    assert [e["node"]["item"]["read"] for e in edges] == [False, False]
    ids = [e["node"]["item"]["id"] for e in edges]
    # No index job runs from here on: what changes is read back from MongoDB.
    await api.gql(UPDATE, {"ids": [ids[0]], "set": {"read": True}}, b)
    await api.gql(UPDATE, {"ids": [ids[1]], "set": {"folder": "TRASH"}}, b)
    edges = (await search(api, b, "in:anywhere lisbon"))["edges"]
    state = {
        e["node"]["item"]["id"]: (e["node"]["item"]["read"], e["node"]["item"]["folder"])
        for e in edges
    }
    assert state == {ids[0]: (True, "INBOX"), ids[1]: (False, "TRASH")}
    # The trashed item no longer matches a default search (TRASH is hidden), nor is:unread.
    assert [e["node"]["item"]["id"] for e in (await search(api, b, "lisbon"))["edges"]] == [ids[0]]
    assert (await search(api, b, "is:unread lisbon"))["edges"] == []
    await api.gql(DELETE, {"ids": [ids[1]]}, b)
    assert [
        e["node"]["item"]["id"] for e in (await search(api, b, "in:anywhere lisbon"))["edges"]
    ] == [ids[0]]


async def test_each_user_finds_only_their_own_mail_and_bcc_only_as_sender(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    carol, c = await api.user("carol")
    await send(api, a, to=[bob], bcc=[carol], subject="Surprise party", text="Keep it secret")
    await send(api, b, to=[bob], subject="Note to self", text="secret recipe")
    await index_everything(system)
    assert await found(api, a, "secret") == {"Surprise party"}
    assert await found(api, b, "secret") == {"Surprise party", "Note to self"}
    assert await found(api, c, "secret") == {"Surprise party"}
    assert await found(api, a, f"bcc:{carol}") == {"Surprise party"}
    assert await found(api, a, "bcc:carol") == {"Surprise party"}
    assert await found(api, b, "bcc:carol") == set()
    assert await found(api, c, "carol") == set()  # carol is only in the Bcc, which she cannot see
    hit = (await search(api, a, "surprise"))["edges"][0]["node"]["item"]
    assert [x["email"] for x in hit["bcc"]] == [carol]
    for crafted in [f"x` || owner:=`{ObjectId()}", "secret) || (in:anywhere", "secret || owner:*"]:
        body = await api.gql(SEARCH, {"q": crafted}, c, expect_errors=True)
        if body.get("data"):
            assert {e["node"]["item"]["subject"] for e in body["data"]["search"]["edges"]} <= {
                "Surprise party"
            }


async def test_pages_follow_the_cursor_newest_first_with_a_stable_total(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(7):
        await send(api, a, to=[bob], subject=f"report {i}", text="weekly numbers")
    await index_everything(system)
    seen, after, totals = [], None, set()
    while True:
        page = await search(api, b, "weekly", first=3, after=after)
        totals.add(page["totalCount"])
        seen += [e["node"]["item"]["subject"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"report {i}" for i in reversed(range(7))]
    assert totals == {7}


async def test_rest_search_answers_items_and_next_cursor(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(3):
        await send(api, a, to=[bob], subject=f"invoice {i}", text="amount due")
    await index_everything(system)
    headers = {"Authorization": f"Bearer {b}"}
    r = await api.http.get(
        "/api/emails/search", params={"q": "invoice", "limit": 2}, headers=headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["subject"] for i in body["items"]] == ["invoice 2", "invoice 1"]
    assert body["items"][0]["highlights"] and body["items"][0]["textBody"].strip() == "amount due"
    r = await api.http.get(
        "/api/emails/search", params={"q": "invoice", "cursor": body["nextCursor"]}, headers=headers
    )
    assert [i["subject"] for i in r.json()["items"]] == ["invoice 0"] and r.json()[
        "nextCursor"
    ] is None
    r = await api.http.get("/api/emails/search", params={"q": "from:(x"}, headers=headers)
    assert r.status_code == 400
    assert (
        r.json()["error"]["code"] == "VALIDATION_ERROR"
        and "position" in r.json()["error"]["message"]
    )
    assert (await api.http.get("/api/emails/search", params={"q": "x"})).status_code == 401


async def test_invalid_query_is_a_validation_error_naming_the_position(api):
    alice, a = await api.user("alice")
    body = await api.gql(SEARCH, {"q": 'invoice "unterminated'}, a, expect_errors=True)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "position 8" in error["message"]
    assert error["extensions"]["fields"][0]["field"] == "query"


async def test_typesense_down_is_service_unavailable_mail_flows_and_the_backlog_catches_up(
    api, system
):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    real = system.search.index
    dead = TypesenseIndex(f"http://127.0.0.1:{free_port()}", "key", real.alias, timeout_seconds=1)
    system.search.index = system.search.indexer.index = dead
    try:
        await send(api, a, to=[bob], subject="Sent during the outage", text="still delivered")
        inbox = await api.gql("{ messages { totalCount } }", token=b)
        assert inbox["data"]["messages"]["totalCount"] == 1
        body = await api.gql(SEARCH, {"q": "outage"}, b, expect_errors=True)
        assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        r = await api.http.get(
            "/api/emails/search", params={"q": "outage"}, headers={"Authorization": f"Bearer {b}"}
        )
        assert r.status_code == 503 and r.headers["Retry-After"]
        from app.domain.errors import ServiceUnavailable

        with pytest.raises(ServiceUnavailable):
            await system.search.indexer.repair()
    finally:
        system.search.index = system.search.indexer.index = real
        await dead.close()
    report = await system.search.indexer.repair()
    assert report.behind == 2 and report.indexed == 2  # alice's Sent view and bob's Inbox view
    assert await found(api, b, "outage") == {"Sent during the outage"}
    assert (await system.search.indexer.repair()).behind == 0


async def test_indexed_version_follows_version_and_the_sweep_repairs_lost_jobs(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await send(api, a, to=[bob], subject="Versioned", text="x")
    db = system.mongo.db
    item = await db.mailbox_items.find_one({"role": "received"})
    assert item["version"] == 1 and "indexed_version" not in item
    await system.search.indexer.index_items([item["_id"]])
    assert (await db.mailbox_items.find_one({"_id": item["_id"]}))["indexed_version"] == 1
    await api.gql(UPDATE, {"ids": [str(item["_id"])], "set": {"starred": True}}, b)  # job "lost"
    after = await db.mailbox_items.find_one({"_id": item["_id"]})
    assert (after["version"], after["indexed_version"]) == (2, 1)
    assert (await system.search.index.document(str(item["_id"])))["starred"] is False
    await system.search.indexer.repair()
    assert (await system.search.index.document(str(item["_id"])))["starred"] is True
    assert (await db.mailbox_items.find_one({"_id": item["_id"]}))["indexed_version"] == 2


async def test_a_stale_write_that_lands_last_is_corrected(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await send(api, a, to=[bob], subject="Race", text="x")
    db, indexer = system.mongo.db, system.search.indexer
    item = await db.mailbox_items.find_one({"role": "received"})
    original = indexer.documents

    async def slow_documents(items):  # type: ignore[no-untyped-def]
        docs = await original(items)
        # While this (version 1) job is between reading and writing, the item changes.
        await api.gql(UPDATE, {"ids": [str(item["_id"])], "set": {"addLabels": ["Late"]}}, b)
        indexer.documents = original
        return docs

    indexer.documents = slow_documents
    await indexer.index_items([item["_id"]])
    doc = await system.search.index.document(str(item["_id"]))
    assert doc["version"] == 2 and doc["label_keys"] == ["late"]
    assert (await db.mailbox_items.find_one({"_id": item["_id"]}))["indexed_version"] == 2


async def test_health_compares_documents_with_items_and_repairs_drift(api, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(3):
        await send(api, a, to=[bob], subject=f"h{i}", text="x")
    await index_everything(system)
    bob_id = (await system.mongo.db.users.find_one({"email": bob}))["_id"]
    assert (await system.search.health(bob_id)).in_sync
    items = await system.mongo.db.mailbox_items.find({"user_id": bob_id}).to_list()
    await system.search.index.delete([str(items[0]["_id"])])  # a document lost
    await system.mongo.db.mailbox_items.delete_one(
        {"_id": items[1]["_id"]}
    )  # a delete never indexed
    health = await system.search.health(bob_id)
    assert (health.documents, health.items) == (2, 2)  # same count, different items
    bad = await system.search.check_health()
    assert bad == []  # counts agree: the per-user repair runs only on a count mismatch...
    await system.mongo.db.mailbox_items.delete_one({"_id": items[2]["_id"]})
    bad = await system.search.check_health()
    assert [(h.user_id, h.documents, h.items) for h in bad] == [(str(bob_id), 2, 1)]
    metrics = (await api.http.get("/metrics")).text
    assert f'mailhub_search_user_drift_documents{{user_id="{bob_id}"}} 1.0' in metrics
    assert "mailhub_search_index_lag_seconds_bucket" in metrics
    # Repaired: the orphans (items 1 and 2) are gone, the lost document (item 0) is back.
    assert await system.search.index.ids_of_owner(f"owner:=`{bob_id}`") == [str(items[0]["_id"])]
    assert (await system.search.health(bob_id)).in_sync
    assert await system.search.check_health() == []


async def test_reindex_swaps_the_alias_while_search_keeps_answering(api, settings, system):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(12):
        await send(api, a, to=[bob], subject=f"archive item {i}", text="reindex me")
    await index_everything(system)
    before = await system.search.index.alias_target()
    answers: list[int] = []
    done = asyncio.Event()

    async def keep_searching() -> None:
        while not done.is_set():
            answers.append((await search(api, b, "reindex"))["totalCount"])
            await asyncio.sleep(0.01)

    async def change_during_copy() -> None:
        await asyncio.sleep(0.05)
        ids = [
            str(i["_id"])
            for i in await system.mongo.db.mailbox_items.find({"role": "received"}).to_list()
        ]
        await api.gql(UPDATE, {"ids": ids[:1], "set": {"addLabels": ["During"]}}, b)
        await system.search.indexer.index_items(ids[:1])

    searcher = asyncio.create_task(keep_searching())
    report, _ = await asyncio.gather(system.search.reindex(batch=2), change_during_copy())
    done.set()
    await searcher
    assert answers and set(answers) == {12}
    assert report.documents == 24 and report.previous == before
    assert await system.search.index.alias_target() == report.collection != before
    assert await found(api, b, "label:during") != set()
    # `mailhub reindex` does the same from the command line.
    assert await asyncio.to_thread(reindex_command, settings) == 0
    assert await system.search.index.alias_target() not in (before, report.collection)
    assert len(await found(api, b, "reindex")) == 12


async def test_index_jobs_ask_arq_to_retry_while_typesense_is_down(api, system):
    from arq.worker import Retry

    from jobs.indexing import index_items, remove_from_index, repair_search_index

    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    item_id = await send(api, a, to=[bob], subject="Retry me", text="x")
    real = system.search.index
    dead = TypesenseIndex(f"http://127.0.0.1:{free_port()}", "key", real.alias, timeout_seconds=1)
    system.search.index = system.search.indexer.index = dead
    try:
        ctx = {"system": system, "job_try": 3}
        for job in (index_items, remove_from_index):
            with pytest.raises(Retry) as retry:
                await job(ctx, [item_id], time.time())
            assert retry.value.defer_score == 8000  # 2 ** tries seconds, in ms
        assert await repair_search_index(ctx) == {"unavailable": 1}
    finally:
        system.search.index = system.search.indexer.index = real
        await dead.close()
    assert await index_items({"system": system, "job_try": 1}, [item_id], time.time()) == 1
    assert await found(api, a, "retry") == {"Retry me"}
