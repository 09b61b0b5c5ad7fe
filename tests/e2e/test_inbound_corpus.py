"""Real-world messages through the MX, read back through GraphQL exactly as they were sent."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.domain.parsing import parse_message
from app.mx.server import start_mx
from app.services.mailbox import content as mailbox_content
from tests.support.mx import MailZone, mail_zone, smtp_send

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = sorted([*(DATA / "eml").glob("*.eml"), *(DATA / "inbound").glob("*.eml")])

ITEM = """query($id: ID!) { message(id: $id) {
  id folder subject from { name email } to { name email } cc { email } textBody htmlBody
  rfc822MessageId inReplyTo references hasAttachments size authResults
  attachments { filename contentType size sha256 downloadUrl }
  spam { isSpam score modelVersion reasons } } }"""
LIST = """{
  inbox: messages(folder: INBOX, first: 50) { edges { node { id rfc822MessageId subject } } }
  spam: messages(folder: SPAM, first: 50) { edges { node { id rfc822MessageId subject } } } }"""


async def listed(api, token):  # type: ignore[no-untyped-def]
    data = (await api.gql(LIST, token=token))["data"]
    return [e["node"] for e in data["inbox"]["edges"] + data["spam"]["edges"]]


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


@pytest.fixture
def settings(settings, zone):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"dns_servers": [zone.address]})


def as_sent(raw: bytes) -> bytes:
    """What an SMTP client transmits: CRLF line ends (smtplib converts bare LF)."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


async def test_corpus_is_stored_and_readable_exactly_as_sent(api, settings):
    mx = await start_mx(settings, api.system)
    try:
        email, token = await api.user("bob")
        sent: dict[str, bytes] = {}
        for path in CORPUS:
            raw = as_sent(path.read_bytes())
            reply = await smtp_send(mx.port, raw, rcpts=[email], mail_from="sender@none.test")
            assert reply["data"][0] == 250, (path.name, reply)
            sent[path.name] = raw
        assert len(await listed(api, token)) == len(CORPUS)

        db = api.system.mongo.db
        for name, raw in sent.items():
            expected = parse_message(raw)
            stored = await db.messages.find_one({"content_sha256": hashlib.sha256(raw).hexdigest()})
            assert stored is not None, name
            item = await db.mailbox_items.find_one({"message_id": stored["_id"]})
            node = (await api.gql(ITEM, {"id": str(item["_id"])}, token=token))["data"]["message"]
            assert node["subject"] == expected.subject, name
            assert node["textBody"] == expected.text_body, name
            assert (node["htmlBody"] is None) == (expected.html_body is None), name
            assert node["rfc822MessageId"] == expected.message_id, name
            assert node["from"]["email"] == (
                expected.from_.email if expected.from_ else "sender@none.test"
            )
            assert [a["email"] for a in node["to"]] == [a.email for a in expected.to], name
            assert node["size"] == len(raw)
            assert node["authResults"].startswith("mx.mailhub.test; spf=none")
            assert node["spam"]["modelVersion"] and 0.0 <= node["spam"]["score"] <= 1.0
            assert [(a["filename"], a["contentType"], a["size"]) for a in node["attachments"]] == [
                (a.filename, a.content_type, len(a.data)) for a in expected.attachments
            ], name
            for attachment, original in zip(node["attachments"], expected.attachments, strict=True):
                body = await api.http.get(
                    urlsplit(attachment["downloadUrl"]).path,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert body.status_code == 200 and body.content == original.data, (name, attachment)
            blob = await api.system.blobs.get(stored["raw_blob_id"])
            assert blob.endswith(raw), name  # byte for byte, after our trace headers
    finally:
        await mx.stop(grace=2)


async def test_non_utf8_samples_decode_to_the_right_text(api, settings):
    mx = await start_mx(settings, api.system)
    try:
        email, token = await api.user("bob")
        for name in ("koi8r_8bit.eml", "shift_jis.eml", "utf8_raw_headers.eml"):
            path = next(p for p in CORPUS if p.name == name)
            reply = await smtp_send(
                mx.port, as_sent(path.read_bytes()), rcpts=[email], mail_from="sender@none.test"
            )
            assert reply["data"][0] == 250, reply
        nodes = await listed(api, token)
        by_id = {n["rfc822MessageId"]: n for n in nodes}
    finally:
        await mx.stop(grace=2)
    assert by_id["<koi8@mail.example>"]["subject"] == "Привет"
    assert any(n["subject"] == "Фото с выходных 📷" for n in nodes)
    assert any(n["subject"] == "会議資料の送付" for n in nodes), [n["subject"] for n in nodes]


async def test_every_inline_text_part_is_readable_through_graphql(api, settings):
    """A disclaimer part before the sender's text, a signature part inside the HTML alternative,
    RFC 2046's second plain part: each reaches textBody / htmlBody (docs/inbound.md, "Bodies")."""
    mx = await start_mx(settings, api.system)
    try:
        email, token = await api.user("bob")
        names = (
            "disclaimer_part_first.eml",
            "html_alternative_signature.eml",
            "rfc2046_two_plain_parts.eml",
        )
        for name in names:
            raw = as_sent((DATA / "eml" / name).read_bytes())
            reply = await smtp_send(mx.port, raw, rcpts=[email], mail_from="sender@none.test")
            assert reply["data"][0] == 250, reply
        ids = {n["rfc822MessageId"]: n["id"] for n in await listed(api, token)}
        bodies = {}
        for message_id in ("disclaimer-first-1@partner.example", "html-signature-1@mac.example"):
            query = "query($id: ID!) { message(id: $id) { textBody htmlBody } }"
            data = await api.gql(query, {"id": ids[f"<{message_id}>"]}, token=token)
            bodies[message_id] = data["data"]["message"]
        rfc = await api.gql(
            "query($id: ID!) { message(id: $id) { textBody htmlBody } }",
            {"id": ids["<rfc2046-sample@bellcore.com>"]},
            token=token,
        )
    finally:
        await mx.stop(grace=2)
    disclaimer = bodies["disclaimer-first-1@partner.example"]
    assert disclaimer["textBody"].startswith("[Scanned by <GatewayAV> & found clean]\n\n")
    assert disclaimer["textBody"].endswith(
        "our offer for the Q3 order is 1,200 units at 4.10 each."
    )
    assert "[Scanned by &lt;GatewayAV&gt; &amp; found clean]" in disclaimer["htmlBody"]
    assert "<b>1,200 units</b>" in disclaimer["htmlBody"]
    signature = bodies["html-signature-1@mac.example"]
    assert signature["textBody"] == "Here is the best one.\n\n-- \nJonas Berg"
    assert "Here is the best one." in signature["htmlBody"]
    assert "Jonas Berg" in signature["htmlBody"]
    assert rfc["data"]["message"]["textBody"].endswith(
        "This is explicitly typed plain US-ASCII text.\nIt DOES end with a linebreak."
    )
    assert rfc["data"]["message"]["htmlBody"] is None


async def receive_attachments_eml(api, settings, local):  # type: ignore[no-untyped-def]
    """attachments.eml through the MX to a new user: (its bytes as sent, the stored message,
    the user's Authorization header)."""
    mx = await start_mx(settings, api.system)
    try:
        email, token = await api.user(local)
        raw = as_sent((DATA / "eml" / "attachments.eml").read_bytes())
        reply = await smtp_send(mx.port, raw, rcpts=[email], mail_from="sender@none.test")
        assert reply["data"][0] == 250, reply
    finally:
        await mx.stop(grace=2)
    digest = hashlib.sha256(raw).hexdigest()
    stored = await api.system.mongo.db.messages.find_one({"content_sha256": digest})
    return raw, stored, {"Authorization": f"Bearer {token}"}


async def collected_with_everything(api, stored) -> None:  # type: ignore[no-untyped-def]
    """Once no view references it, the message goes with its attachments and every blob."""
    db = api.system.mongo.db
    await db.mailbox_items.delete_many({"message_id": stored["_id"]})
    assert await api.system.content.collect([stored["_id"]]) == 1
    assert await db.attachments.count_documents({}) == 0
    assert await db["blobs.files"].count_documents({}) == 0
    assert await db["blobs.chunks"].count_documents({}) == 0


async def test_received_attachments_are_stored_once_inside_the_raw_mime(api, settings):
    """A received attachment is not written a second time as a blob of its own: its document
    points into the message's raw MIME, the download decodes it from there (checked against
    its SHA-256 first), and it goes with the message."""
    raw, stored, auth = await receive_attachments_eml(api, settings, "carol")
    db = api.system.mongo.db
    expected = parse_message(raw).attachments
    docs = await db.attachments.find({"message_ids": stored["_id"]}).sort("in_raw.index").to_list()
    assert len(docs) == len(expected) == 5
    assert all("blob_id" not in d and d["in_raw"]["blob_id"] == stored["raw_blob_id"] for d in docs)
    assert await db["blobs.files"].count_documents({}) == 1  # the raw MIME, nothing else
    for doc, original in zip(docs, expected, strict=True):
        got = await api.http.get(f"/api/attachments/{doc['_id']}", headers=auth)
        assert got.status_code == 200 and got.content == original.data, doc["filename"]
        assert got.headers["content-length"] == str(len(original.data))

    # content that no longer matches what arrived is refused, not served
    await db.attachments.update_one({"_id": docs[0]["_id"]}, {"$set": {"sha256": "0" * 64}})
    assert (
        await api.http.get(f"/api/attachments/{docs[0]['_id']}", headers=auth)
    ).status_code == 404

    await collected_with_everything(api, stored)


async def test_a_received_attachment_over_the_limit_keeps_a_blob_of_its_own(
    api, settings, monkeypatch
):
    """Past ``ATTACHMENT_IN_RAW_MAX`` an attachment is also a blob of its own (its download
    streams it instead of parsing the whole message); the smaller ones of the same message
    stay in the raw MIME only. Both kinds download byte for byte and go with the message."""
    monkeypatch.setattr(mailbox_content, "ATTACHMENT_IN_RAW_MAX", 50)
    raw, stored, auth = await receive_attachments_eml(api, settings, "dave")
    db = api.system.mongo.db
    expected = parse_message(raw).attachments
    docs = {d["sha256"]: d for d in await db.attachments.find({}).to_list()}
    big = [a for a in expected if len(a.data) > 50]
    assert big and len(big) < len(expected)
    for original in expected:
        doc = docs[hashlib.sha256(original.data).hexdigest()]
        assert ("blob_id" in doc) == (len(original.data) > 50), doc["filename"]
        assert ("in_raw" in doc) == (len(original.data) <= 50), doc["filename"]
        got = await api.http.get(f"/api/attachments/{doc['_id']}", headers=auth)
        assert got.status_code == 200 and got.content == original.data, doc["filename"]
    assert await db["blobs.files"].count_documents({}) == 1 + len(big)
    await collected_with_everything(api, stored)
