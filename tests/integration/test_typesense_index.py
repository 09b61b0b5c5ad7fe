"""The Typesense adapter against a real Typesense 0.24.1 server (tests/conftest.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from app.adapters.typesense_index import TypesenseIndex
from app.domain.errors import ServiceUnavailable, ValidationError
from app.domain.search_query import compile_query, owner_filter, parse_query, viewer_filter
from app.embedded import free_port
from app.services.search.indexing import search_document
from app.services.search.service import search_params

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ALICE, MALLORY = ObjectId(), ObjectId()


@pytest.fixture
async def index(services, unique_name):  # type: ignore[no-untyped-def]
    ix = TypesenseIndex(services.typesense, services.typesense_api_key, f"{unique_name}_items")
    await ix.ensure()
    yield ix
    await ix.drop_all()
    await ix.close()


def doc(
    owner: ObjectId,
    subject: str,
    body: str = "",
    *,
    folder: str = "INBOX",
    labels=(),
    sender=("Bob Builder", "bob@example.test"),
    read=False,
    size=1000,
    age_days=0,
    filenames=(),
    role="received",
    bcc=(),
) -> dict:
    item_id = ObjectId()
    item = {
        "_id": item_id,
        "user_id": owner,
        "message_id": ObjectId(),
        "role": role,
        "thread_id": ObjectId(),
        "folder": folder,
        "labels": list(labels),
        "read": read,
        "starred": False,
        "received_at": NOW - timedelta(days=age_days),
        "version": 1,
        "subject": subject,
        "has_attachments": bool(filenames),
        "size": size,
    }
    message = {
        "from": {"name": sender[0], "email": sender[1]},
        "to": [{"name": "Alice", "email": "alice@example.test"}],
        "cc": [],
        "bcc": [{"name": None, "email": b} for b in bcc],
        "attachments": [{"filename": f} for f in filenames],
    }
    return search_document(item, message, body, body_chars=10_000)


async def ids_for(
    index: TypesenseIndex, owner: ObjectId, query: str, *, scoped: bool = True
) -> set[str]:
    compiled = compile_query(parse_query(query, now=NOW))
    params = search_params(compiled.q, viewer_filter(str(owner), compiled.filter_by), 100)
    [result] = await index.search(
        [params], owner_filter=owner_filter(str(owner)) if scoped else None
    )
    return {h["document"]["id"] for h in result["hits"]}


async def test_import_upserts_and_search_finds_words_and_phrases(index):
    a = doc(ALICE, "Invoice for March", "please pay the invoice quickly")
    b = doc(ALICE, "Lunch plans", "tacos at noon")
    await index.upsert([a, b])
    assert await ids_for(index, ALICE, "invoice") == {a["id"]}
    assert await ids_for(index, ALICE, '"pay the invoice"') == {a["id"]}
    assert await ids_for(index, ALICE, '"invoice pay"') == set()
    assert await ids_for(index, ALICE, 'march -"pay the"') == set()
    assert await ids_for(index, ALICE, '-"pay the"') == {b["id"]}
    await index.upsert(
        [{**a, "subject": "Receipt", "subject_terms": ["receipt"], "terms": ["receipt"]}]
    )
    assert await ids_for(index, ALICE, "invoice") == set()
    assert await ids_for(index, ALICE, "receipt") == {a["id"]}


async def test_accents_case_and_punctuation_match_like_the_term_arrays(index):
    a = doc(ALICE, "Café RÉSUMÉ", "foo-bar alice@example.test 日本語 テスト")
    await index.upsert([a])
    for query in (
        "cafe",
        "résumé",
        "RESUME",
        "foo",
        "bar",
        "foo-bar",
        "example",
        "日本語",
        "テスト",
    ):
        assert await ids_for(index, ALICE, query) == {a["id"]}, query
    assert await ids_for(index, ALICE, "foobar") == set()


CRAFTED = [
    "x` || owner:!=`nobody",
    "label:`a` || owner:=`b",
    "from:a)||(owner:=b",
    'subject:"x`) || (true',
    "&& || :=",
    "owner:=" + str(MALLORY),
    "(((a)))) || owner",
    'label:"x`] || [`y"',
    "in:anywhere",
    "-in:inbox",
    "\u202eowner\u202c:=x",
    "a OR -b OR -(c d)",
    "larger:0",
    "smaller:99999999999",
    "label:\\` || (owner:*)",
    'filename:"a`,`b"',
    "bcc:mallory@example.test",
    "in:`TRASH` || x",
]


@pytest.mark.parametrize("query", CRAFTED)
async def test_no_crafted_query_reaches_another_owners_documents(index, query):
    mine = doc(ALICE, "my mail", "hello")
    theirs = [
        doc(
            MALLORY,
            "owner b x a y",
            "owner nobody true c d",
            labels=["a", "x`"],
            sender=("A", "a@example.test"),
            folder=f,
        )
        for f in ("INBOX", "TRASH")
    ]
    await index.upsert([mine, *theirs])
    # Even without the scoped key (the compiled filter alone) nothing of Mallory's comes back;
    # a query that does not parse is refused before it reaches Typesense.
    try:
        found = await ids_for(index, ALICE, query, scoped=False) | await ids_for(
            index, ALICE, query
        )
    except ValidationError as e:
        assert "position" in e.message
        return
    assert found <= {mine["id"]}


async def test_scoped_key_confines_a_filter_that_names_another_owner(index):
    mine, theirs = doc(ALICE, "mine"), doc(MALLORY, "theirs")
    await index.upsert([mine, theirs])
    params = {"q": "*", "query_by": "subject", "filter_by": f"owner:=`{MALLORY}` || read:=false"}
    [result] = await index.search([params], owner_filter=owner_filter(str(ALICE)))
    assert {h["document"]["id"] for h in result["hits"]} == {mine["id"]}


async def test_delete_counts_and_export_by_owner(index):
    docs = [doc(ALICE, f"m{i}") for i in range(5)] + [doc(MALLORY, "x")]
    await index.upsert(docs)
    assert await index.count_by_owner() == {str(ALICE): 5, str(MALLORY): 1}
    assert await index.delete([docs[0]["id"], docs[1]["id"], str(ObjectId())]) == 2
    assert sorted(await index.ids_of_owner(owner_filter(str(ALICE)))) == sorted(
        d["id"] for d in docs[2:5]
    )


async def test_alias_swap_moves_searches_to_the_new_collection(index):
    old = await index.alias_target()
    await index.upsert([doc(ALICE, "old copy")])
    new = index.new_collection_name()
    await index.create_collection(new)
    await index.upsert([doc(ALICE, "new copy")], new)
    assert await ids_for(index, ALICE, "copy") != set()
    await index.point_alias(new)
    await index.drop_collection(old)
    [result] = await index.search(
        [{"q": "copy", "query_by": "subject", "include_fields": "subject"}],
        owner_filter=owner_filter(str(ALICE)),
    )
    assert [h["document"]["subject"] for h in result["hits"]] == ["new copy"]


async def test_unreachable_server_is_service_unavailable_quickly(unique_name):
    ix = TypesenseIndex(f"http://127.0.0.1:{free_port()}", "key", unique_name, timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await ix.ensure()
    with pytest.raises(ServiceUnavailable):
        await ix.search([{"q": "*", "query_by": "subject"}], owner_filter=owner_filter(str(ALICE)))
    assert not await ix.healthy()
    assert time.monotonic() - started < 5
    await ix.close()


async def test_a_collection_from_before_probable_spam_gains_the_field_on_start(
    services, unique_name
):  # type: ignore[no-untyped-def]
    from app.adapters.typesense_index import collection_schema

    ix = TypesenseIndex(services.typesense, services.typesense_api_key, f"{unique_name}_old")
    try:
        name = ix.new_collection_name()
        old = collection_schema(name)
        old["fields"] = [f for f in old["fields"] if f["name"] != "probable_spam"]
        await ix.admin.collections.create(old)
        await ix.point_alias(name)
        before = doc(ALICE, "indexed before the field existed")
        del before["probable_spam"]
        await ix.upsert([before])

        await ix.ensure()  # what every process does on start

        fields = {f["name"] for f in (await ix.admin.collections[name].retrieve())["fields"]}
        assert "probable_spam" in fields
        flagged = doc(ALICE, "flagged sale")
        flagged["probable_spam"] = True
        await ix.upsert([flagged])
        assert await ids_for(ix, ALICE, "is:probable-spam") == {flagged["id"]}
    finally:
        await ix.drop_all()
        await ix.close()
