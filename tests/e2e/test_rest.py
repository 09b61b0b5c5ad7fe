"""The REST facade (CONTRACT.md) and attachments over real HTTP."""

import hashlib

from tests.e2e.test_send_and_read import INBOX


def auth(token):
    return {"Authorization": f"Bearer {token}"}


async def upload(api, token, name, data, content_type="application/octet-stream"):
    return await api.http.post(
        "/api/attachments", files={"file": (name, data, content_type)}, headers=auth(token)
    )


async def test_seed_send_request_delivers_and_reads_back(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    r = await upload(api, a, "report Q3 (final).pdf", pdf, "application/pdf")
    assert r.status_code == 201, r.text
    att = r.json()
    assert att["size"] == len(pdf) and att["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert att["contentType"] == "application/pdf"

    r = await api.http.post(
        "/api/emails/send",
        headers=auth(a),
        json={
            "from": alice,
            "to": [bob],
            "cc": [],
            "bcc": [],
            "subject": "Hello",
            "body": "Hi Bob",
            "attachments": [att["id"]],
        },
    )
    assert r.status_code == 202, r.text
    sent = r.json()
    assert set(sent) == {"id", "messageId", "status"} and sent["status"] == "queued"

    r = await api.http.get("/api/mailbox/inbox", params={"limit": 10}, headers=auth(b))
    assert r.status_code == 200
    page = r.json()
    assert page["nextCursor"] is None and len(page["items"]) == 1
    item = page["items"][0]
    assert item["subject"] == "Hello" and item["textBody"].strip() == "Hi Bob"
    assert item["hasAttachments"] and item["attachments"][0]["filename"] == "report Q3 (final).pdf"

    r = await api.http.get(f"/api/emails/{item['id']}", headers=auth(b))
    assert r.status_code == 200 and r.json()["from"]["email"] == alice

    download = await api.http.get(f"/api/attachments/{att['id']}", headers=auth(b))
    assert download.status_code == 200 and download.content == pdf
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"

    r = await api.http.post(
        f"/api/emails/{item['id']}/labels",
        headers=auth(b),
        json={"add": ["Reports"], "read": True, "starred": True},
    )
    assert r.status_code == 200
    assert r.json()["labels"] == ["Reports"] and r.json()["read"] and r.json()["starred"]


async def test_attachments_are_private_until_shared_by_a_message(api):
    alice, a = await api.user("alice")
    _, e = await api.user("eve")
    att = (await upload(api, a, "secret.txt", b"top secret")).json()
    assert (await api.http.get(f"/api/attachments/{att['id']}", headers=auth(e))).status_code == 404
    assert (await api.http.get(f"/api/attachments/{att['id']}")).status_code == 401
    r = await api.http.post(
        "/api/emails/send",
        headers=auth(e),
        json={"to": [alice], "subject": "steal", "body": "x", "attachments": [att["id"]]},
    )
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "attachmentIds[0]"


async def test_oversize_upload_is_refused_and_leaves_nothing_behind(api):
    alice, a = await api.user("alice")
    api.system.attachments.settings = api.system.settings.model_copy(
        update={"max_attachment_bytes": 1024 * 1024}
    )
    big = b"x" * (1024 * 1024 + 10)

    async def chunks():
        boundary = b"BOUNDARY"
        yield (
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        )
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]
        yield b"\r\n--" + boundary + b"--\r\n"

    r = await api.http.post(
        "/api/attachments",
        content=chunks(),
        headers={**auth(a), "Content-Type": "multipart/form-data; boundary=BOUNDARY"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    db = api.system.mongo.db
    assert await db.attachments.count_documents({}) == 0
    assert await db["blobs.files"].count_documents({}) == 0
    assert await db["blobs.chunks"].count_documents({}) == 0


async def test_uploaded_html_disguised_as_image_is_not_served_as_image(api):
    _, a = await api.user("alice")
    att = (
        await upload(api, a, "cat.png", b"<html><script>alert(1)</script></html>", "image/png")
    ).json()
    assert att["contentType"] not in ("image/png", "text/html")


async def test_rest_errors_are_json_with_codes(api):
    _, a = await api.user("alice")
    r = await api.http.post("/api/emails/send", headers=auth(a), content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await api.http.post("/api/emails/send", headers=auth(a), json={"to": "x", "subject": 5})
    assert r.status_code == 400
    r = await api.http.get("/api/mailbox/outbox", headers=auth(a))
    assert r.status_code == 400 and "unknown folder" in r.json()["error"]["message"]
    r = await api.http.get("/api/emails/000000000000000000000000", headers=auth(a))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = await api.http.get("/api/emails/not-an-id", headers=auth(a))
    assert r.status_code == 404


async def test_drafts_endpoint_creates_a_draft(api):
    alice, a = await api.user("alice")
    r = await api.http.post(
        "/api/emails/drafts",
        headers=auth(a),
        json={"to": ["x@remote.test"], "subject": "later", "body": "..."},
    )
    assert r.status_code == 201
    page = (await api.gql(INBOX, {"folder": "DRAFTS"}, a))["data"]["messages"]
    assert [e["node"]["id"] for e in page["edges"]] == [r.json()["id"]]
