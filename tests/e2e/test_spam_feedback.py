"""markSpam / markNotSpam: items move, and the user's own filter learns at once."""

from tests.e2e.test_mailbox_ops import inbox_ids
from tests.e2e.test_send_and_read import SEND

MARK = """mutation($ids: [ID!]!) { markSpam(ids: $ids) { __typename
  ... on UpdateMessagesSuccess { items { id folder } } ... on ValidationError { fields { field } } } }"""
UNMARK = """mutation($ids: [ID!]!) { markNotSpam(ids: $ids) { __typename
  ... on UpdateMessagesSuccess { items { id folder } } } }"""

NEWSLETTER = (
    "Garden club newsletter: tulip bulbs are in, compost workshop on Saturday, "
    "seed swap table by the greenhouse, volunteers for the herb beds welcome."
)


def similar(i):
    return (
        f"Subject: Garden club newsletter {i}\r\n\r\nTulip bulbs are in, compost workshop on "
        f"Saturday, seed swap table by the greenhouse, volunteers for the herb beds welcome.\r\n"
    ).encode()


async def test_marking_spam_moves_the_item_and_teaches_only_that_user(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    carol, c = await api.user("carol")
    feedback = api.system.spam_feedback
    bob_id = (await api.system.mongo.db.users.find_one({"email": bob}))["_id"]
    carol_id = (await api.system.mongo.db.users.find_one({"email": carol}))["_id"]
    before = await feedback.verdict_for_user(similar(1), bob_id)
    assert not before.is_spam  # a friendly newsletter is ham for the global model

    for i in range(2):
        await api.gql(
            SEND,
            {
                "input": {
                    "to": [bob, carol],
                    "subject": f"Garden club newsletter {i}",
                    "text": NEWSLETTER,
                }
            },
            a,
        )
    ids = await inbox_ids(api, b)
    r = (await api.gql(MARK, {"ids": ids}, b))["data"]["markSpam"]
    assert r["__typename"] == "UpdateMessagesSuccess" and {i["folder"] for i in r["items"]} == {
        "SPAM"
    }
    assert await inbox_ids(api, b) == [] and len(await inbox_ids(api, b, "SPAM")) == 2

    after = await feedback.verdict_for_user(similar(7), bob_id)
    assert after.is_spam and after.score > before.score
    assert not (await feedback.verdict_for_user(similar(7), carol_id)).is_spam

    # changing one's mind moves the vote back
    r = (await api.gql(UNMARK, {"ids": ids}, b))["data"]["markNotSpam"]
    assert {i["folder"] for i in r["items"]} == {"INBOX"}
    assert not (await feedback.verdict_for_user(similar(7), bob_id)).is_spam


async def test_sent_mail_cannot_be_marked_spam(api):
    alice, a = await api.user("alice")
    bob, _ = await api.user("bob")
    await api.gql(SEND, {"input": {"to": [bob], "subject": "mine", "text": "x"}}, a)
    sent = await inbox_ids(api, a, "SENT")
    r = (await api.gql(MARK, {"ids": sent}, a))["data"]["markSpam"]
    assert r == {"__typename": "ValidationError", "fields": [{"field": "ids"}]}


async def test_periodic_retraining_promotes_only_a_model_that_is_not_worse(api, tmp_path):
    from ml.corpus import DATA_DIR, TARBALL, fetch_corpus
    from ml.model import load

    if not (DATA_DIR / TARBALL).exists():
        fetch_corpus()
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(3):
        await api.gql(
            SEND,
            {"input": {"to": [bob], "subject": f"Garden club newsletter {i}", "text": NEWSLETTER}},
            a,
        )
    await api.gql(MARK, {"ids": await inbox_ids(api, b)}, b)
    outcome = await api.system.spam_feedback.retrain(tmp_path / "models", DATA_DIR / TARBALL)
    assert outcome.labels == 3
    if outcome.promoted:
        path = await api.system.spam_feedback.promoted_model_path()
        assert path is not None and path.parent == tmp_path / "models"
        assert load(path).version == outcome.version
    else:
        assert outcome.reason == "candidate was worse on the held-out period"
        assert await api.system.spam_feedback.promoted_model_path() is None


async def test_inbound_mail_like_one_a_user_marked_spam_goes_to_their_spam_folder(api, settings):
    """Feedback changes that user's future verdicts at once; other recipients are untouched."""
    from app.mx.server import start_mx
    from tests.support.mx import smtp_send

    mx = await start_mx(settings, api.system)
    try:
        bob, b = await api.user("bob")
        carol, c = await api.user("carol")

        def raw(i: int) -> bytes:
            return (
                f"From: Garden Club <club@garden.example>\r\nTo: {bob}, {carol}\r\n"
                f"Subject: Garden club newsletter {i}\r\nMessage-ID: <n{i}@garden.example>\r\n"
                f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{NEWSLETTER}\r\n"
            ).encode()

        reply = await smtp_send(
            mx.port, raw(1), rcpts=[bob, carol], mail_from="club@garden.example"
        )
        assert reply["data"][0] == 250
        [first] = await inbox_ids(api, b)
        await api.gql(MARK, {"ids": [first]}, b)

        reply = await smtp_send(
            mx.port, raw(2), rcpts=[bob, carol], mail_from="club@garden.example"
        )
        assert reply["data"][0] == 250
        assert await inbox_ids(api, b) == [] and len(await inbox_ids(api, b, "SPAM")) == 2
        assert len(await inbox_ids(api, c)) == 2  # carol never said anything: her inbox
        spam = (
            await api.gql(
                "{ messages(folder: SPAM) { edges { node { spam { isSpam score } } } } }", token=b
            )
        )["data"]["messages"]["edges"][0]["node"]["spam"]
        assert spam["isSpam"] is True
    finally:
        await mx.stop()


ITEMS = """query($folder: Folder) { messages(folder: $folder) { edges { node {
  id subject folder spam { isSpam probable score } } } } }"""
SEARCH = (
    """query($q: String!) { search(query: $q, first: 20) { edges { node { item { id } } } } }"""
)


async def test_probable_spam_is_flagged_in_the_inbox_and_feedback_moves_the_users_threshold(
    api, settings, system
):
    """Between the two thresholds: kept in the Inbox, flagged, findable with is:probable-spam;
    markNotSpam answers the flag and raises that user's threshold, markSpam on an unflagged
    message lowers it."""
    from app.mx.server import start_mx
    from tests.support.mx import smtp_send

    mx = await start_mx(settings, api.system)
    try:
        bob, b = await api.user("bob")
        bob_id = (await api.system.mongo.db.users.find_one({"email": bob}))["_id"]
        feedback = api.system.spam_feedback

        def raw(subject: str, body: str) -> bytes:
            return (
                f"From: Garden Shop <shop@garden.example>\r\nTo: {bob}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{subject.replace(' ', '-')}@garden.example>\r\n"
                f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
            ).encode()

        sale = raw("Tulip bulbs on sale", "Tulip bulbs are on sale at the garden club shop.")
        meeting = raw("Garden club", "The garden club meets on Saturday. Bring seeds to swap.")
        for message in (sale, meeting):
            reply = await smtp_send(mx.port, message, rcpts=[bob], mail_from="shop@garden.example")
            assert reply["data"][0] == 250

        edges = (await api.gql(ITEMS, {"folder": "INBOX"}, b))["data"]["messages"]["edges"]
        nodes = {e["node"]["subject"]: e["node"] for e in edges}
        flagged, plain = nodes["Tulip bulbs on sale"], nodes["Garden club"]
        assert flagged["spam"]["probable"] is True and flagged["spam"]["isSpam"] is False
        assert flagged["folder"] == "INBOX"
        assert plain["spam"]["probable"] is False

        await system.search.indexer.repair()  # what the index jobs do, inline
        try:
            hits = (await api.gql(SEARCH, {"q": "is:probable-spam"}, b))["data"]["search"]
            assert [e["node"]["item"]["id"] for e in hits["edges"]] == [flagged["id"]]

            r = (await api.gql(UNMARK, {"ids": [flagged["id"]]}, b))["data"]["markNotSpam"]
            assert r["__typename"] == "UpdateMessagesSuccess"
            edges = (await api.gql(ITEMS, {"folder": "INBOX"}, b))["data"]["messages"]["edges"]
            answered = next(e["node"] for e in edges if e["node"]["id"] == flagged["id"])
            assert answered["spam"]["probable"] is False
            hits = (await api.gql(SEARCH, {"q": "is:probable-spam"}, b))["data"]["search"]
            assert hits["edges"] == []
        finally:
            await system.search.index.drop_all()
        assert await feedback.probable_offset(bob_id) == 0.05  # a false flag: flag less

        await api.gql(MARK, {"ids": [plain["id"]]}, b)  # a spam the flag missed
        assert await feedback.probable_offset(bob_id) == 0.0
        await api.gql(MARK, {"ids": [plain["id"]]}, b)  # the same label again moves nothing
        assert await feedback.probable_offset(bob_id) == 0.0
    finally:
        await mx.stop()


async def test_retraining_reads_only_recent_inbound_mail_as_its_unlabeled_stream(api):
    from datetime import UTC, datetime, timedelta

    from bson import ObjectId

    from app.services.feedback.spam import RETRAIN_INBOUND_DAYS

    system = api.system
    now = datetime.now(UTC)

    async def stored(direction: str, age: timedelta, text: str) -> None:
        blob = await system.blobs.put(f"Subject: {text}\r\n\r\n{text}\r\n".encode())
        # an ObjectId starts with its creation time, which is what the date range reads
        doc = {"_id": ObjectId.from_datetime(now - age), "direction": direction}
        await system.mongo.db.messages.insert_one({**doc, "raw_blob_id": blob})

    await stored("inbound", timedelta(days=1), "fresh inbound")
    await stored("inbound", timedelta(days=RETRAIN_INBOUND_DAYS + 5), "old inbound")
    await stored("outbound", timedelta(days=1, seconds=1), "fresh outbound")
    stream = await system.spam_feedback.recent_inbound(now)
    assert [raw.split(b"\r\n")[0] for raw in stream] == [b"Subject: fresh inbound"]
