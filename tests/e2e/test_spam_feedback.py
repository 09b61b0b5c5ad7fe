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
