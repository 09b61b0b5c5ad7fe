"""Bulk campaigns end to end (issue 15): a real api, worker, dnsmasq and SMTP sinks.

Every campaign message goes through the ordinary delivery pipeline to the sinks; what the
sinks received is what is checked (once each, rendered with the recipient's variables,
DKIM-signed with List-Unsubscribe in h=), plus the records in MongoDB.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import itertools
import os
import re
import subprocess
import sys
import time
from collections import Counter
from email import policy
from typing import Any

import dkim
import pytest
from bson import ObjectId

from app.domain import campaign_tokens
from app.domain.campaigns import batch_plan
from app.domain.viewer import Viewer
from app.services.campaigns import lists
from app.services.campaigns.stats import recipient_states
from app.services.events.buckets import expand_all
from app.services.feedback.bounces import report_from_webhook
from tests.support.campaigns import campaign_messages, campaign_recipients, create_campaign
from tests.support.cleanup import drop_database
from tests.support.http_servers import ApiClient, mailhub_api
from tests.support.outbound import SENDER_DOMAIN, Outbound, outbound_world

HOST = "mx.mailhub.test"  # tests/conftest.py settings.hostname
PUBLIC = "https://mail.example.test"
VERIFIED_DNS = {
    SENDER_DOMAIN: [f"v=spf1 mx a:{HOST} -all"],
    f"_dmarc.{SENDER_DOMAIN}": [f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{SENDER_DOMAIN}"],
}
WORLD = {
    "extra_txt": VERIFIED_DNS,
    "public_url": PUBLIC,
    "campaign_warmup_ramp": [],
    "campaign_stall_seconds": 1.0,
    "send_limit_per_hour": 1_000_000,
    "send_limit_per_day": 1_000_000,
    "domain_rate_per_minute": 0,
}

LOGIN = """mutation { login(email: "alice@example.test", password: "correct horse battery") {
  ... on LoginSuccess { token } } }"""
SAVE = """mutation($i: TemplateInput!) { saveTemplate(input: $i) { __typename } }"""
PUBLISH = """mutation($k: String!) { publishTemplate(key: $k, version: 1) { __typename } }"""
VERIFY = """mutation($n: String!) { verifyDomain(name: $n) {
  name verified checkedAt records { kind type name value status found detail } } }"""
DOMAINS = "{ domains { name verified records { kind status } } }"
CREATE = """mutation($i: CampaignInput!) { createCampaign(input: $i) { __typename
  ... on CampaignSuccess { campaign { id status from templateVersion ratePerMinute
      trackOpens trackClicks template { key } } }
  ... on ValidationError { message fields { field message } } } }"""
ADD = """mutation($id: ID!, $r: [CampaignRecipientInput!]!) { addCampaignRecipients(id: $id,
  recipients: $r) { __typename ... on CampaignSuccess { added duplicates
  invalid { email reason } campaign { stats { recipients } } }
  ... on ValidationError { message fields { field } } } }"""
ACTION = """mutation($id: ID!) { %s(id: $id) { __typename
  ... on CampaignSuccess { campaign { status } } ... on ValidationError { message } } }"""
STATS = """query($id: ID!) { campaign(id: $id) { status stats { recipients pending queued sent
  delivered deferred bounced complained suppressed unsubscribed opened clicked machineOpened
  machineClicked failed waitingForWarmup waiting } } }"""

TEMPLATE = {
    "key": "newsletter",
    "name": "Newsletter",
    "subject": "Hello {{ name }}",
    "text": "Hi {{ name }}, your code is {{ code }}.",
    "html": '<p>Hi {{ name }}, code {{ code }}</p><a href="https://shop.test/offer?c={{ code }}">'
    'offer</a> <a href="https://shop.test/help">help</a>',
    "variables": {"type": "object", "required": ["name", "code"]},
}


async def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


class Session:
    def __init__(self, w: Outbound, api: ApiClient, token: str) -> None:
        self.w, self.api, self.token = w, api, token

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.api.gql(query, variables, self.token)
        assert not body.get("errors"), body["errors"]
        return body["data"]  # type: ignore[no-any-return]

    async def create(self, **fields: Any) -> str:
        data = await self.gql(
            CREATE,
            {"i": {"name": "Spring", "template": {"key": "newsletter", "variables": {}}, **fields}},
        )
        assert data["createCampaign"]["__typename"] == "CampaignSuccess", data
        return str(data["createCampaign"]["campaign"]["id"])

    async def add(self, cid: str, recipients: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i in range(0, len(recipients), 1000):
            out = (await self.gql(ADD, {"id": cid, "r": recipients[i : i + 1000]}))[
                "addCampaignRecipients"
            ]
            assert out["__typename"] == "CampaignSuccess", out
        return out

    async def act(self, cid: str, action: str) -> dict[str, Any]:
        return (await self.gql(ACTION % action, {"id": cid}))[action]  # type: ignore[no-any-return]

    async def stats(self, cid: str) -> dict[str, Any]:
        return (await self.gql(STATS, {"id": cid}))["campaign"]  # type: ignore[no-any-return]

    async def finished(self, cid: str, within: float = 120) -> dict[str, Any]:
        """Wait until the campaign completed and every queued message left the queue."""

        async def done() -> bool:
            s = await self.stats(cid)
            st = s["stats"]
            return s["status"] in ("completed", "canceled") and st["queued"] == (
                st["sent"] + st["failed"]
            )

        await _until(done, within, "the campaign to finish")
        return await self.stats(cid)


async def _session(w: Outbound, api: ApiClient) -> Session:
    token = (await api.gql(LOGIN))["data"]["login"]["token"]
    s = Session(w, api, token)
    assert (await s.gql(SAVE, {"i": TEMPLATE}))["saveTemplate"]["__typename"] == "TemplateSuccess"
    assert (await s.gql(PUBLISH, {"k": "newsletter"}))["publishTemplate"]["__typename"] == (
        "TemplateSuccess"
    )
    verified = (await s.gql(VERIFY, {"n": SENDER_DOMAIN}))["verifyDomain"]
    assert verified["verified"], verified
    return s


def _parse(raw: bytes) -> Any:
    return email.message_from_bytes(raw, policy=policy.default)


def _body(msg: Any, kind: str) -> str:
    part = msg.get_body(preferencelist=(kind,))
    return part.get_content() if part else ""


def _local_path(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return url[len(PUBLIC) :]


def _received(w: Outbound, domains: list[str]) -> Counter[str]:
    """How many messages each address received, over the sinks of ``domains``."""
    counts: Counter[str] = Counter()
    for name in domains:
        for m in w.sinks[name].received:
            for rcpt in m.rcpt_tos:
                counts[rcpt.lower()] += 1
    return counts


# --- the big one ------------------------------------------------------------------------------

# The issue asks for 5,000 recipients. MAILHUB_CAMPAIGN_E2E_RECIPIENTS=5000 runs that size
# (passed in 98 s on the shared 2-core machine; an earlier attempt at load 19 hit database
# timeouts), so the suite's default is 1,000 over the same 20 domains (~25 s).
RECIPIENTS = int(os.environ.get("MAILHUB_CAMPAIGN_E2E_RECIPIENTS", "1000"))
DOMAINS_N = 20
RATE = RECIPIENTS * 60 // 5  # per minute: a five-second campaign in batches a second apart


@pytest.mark.timeout(420)
async def test_campaign_to_many_domains_exactly_once_paced_suppressed_unsubscribed(settings):
    async with (
        outbound_world(settings, extra_domains=DOMAINS_N, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        people = [
            {
                "email": f"u{i}@d{i % DOMAINS_N}.test",
                "variables": {"name": f"N{i}", "code": f"C{i}"},
            }
            for i in range(RECIPIENTS)
        ]
        # suppressed before the campaign: a manual entry of the sender's, and a global one
        await w.system.suppression.add(
            "u7@d7.test", reason="manual", scope=f"user:{w.sender.user_id}"
        )
        await w.system.suppression.add("u8@d8.test", reason="hard_bounce")
        cid = await s.create(ratePerMinute=RATE)
        # duplicates and invalid addresses are reported, not added
        extra = [{"email": "U1@D1.test", "variables": {}}, {"email": "nope", "variables": {}}]
        added = await s.add(cid, people[: RECIPIENTS - 2])
        last = await s.add(cid, people[RECIPIENTS - 2 :] + extra)
        assert added["__typename"] == "CampaignSuccess" and last["added"] == 2
        assert last["duplicates"] == ["U1@d1.test"]
        assert [x["email"] for x in last["invalid"]] == ["nope"]
        assert last["campaign"]["stats"]["recipients"] == RECIPIENTS

        # the last recipient unsubscribes (one-click, their token) before its batch goes out
        listed = await campaign_recipients(w.db, ObjectId(cid))
        assert [r.seq for r in listed] == list(range(RECIPIENTS))
        late = listed[RECIPIENTS - 1]
        secret = w.settings.secret_key.get_secret_value().encode()
        late_token = campaign_tokens.unsubscribe_token(secret, late.id)
        page = await api.http.get(f"/u/{late_token}")  # a GET only shows the page
        assert page.status_code == 200 and '<form method="post"' in page.text
        assert not await w.system.suppression.suppressed(
            [late.email], scope=f"user:{w.sender.user_id}"
        )
        forged = late_token[:-2] + ("aa" if late_token[-2:] != "aa" else "bb")
        assert (
            await api.http.post(f"/u/{forged}", content=b"List-Unsubscribe=One-Click")
        ).status_code == 404
        assert (await api.http.get(f"/u/{forged}")).status_code == 404

        started = await s.act(cid, "startCampaign")
        assert started["campaign"]["status"] == "sending"
        r = await api.http.post(
            f"/u/{late_token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200
        final = await s.finished(cid, within=240)
        stats = final["stats"]
        assert final["status"] == "completed"

        counts = _received(w, [f"d{n}" for n in range(DOMAINS_N)])
        skipped = {"u7@d7.test", "u8@d8.test", late.email}
        for p in people:
            want = 0 if p["email"] in skipped else 1
            assert counts[p["email"]] == want, (p["email"], counts[p["email"]])
        assert sum(counts.values()) == RECIPIENTS - 3
        assert stats["recipients"] == RECIPIENTS
        assert stats["suppressed"] == 3 and stats["unsubscribed"] == 1
        assert stats["queued"] == stats["delivered"] == stats["sent"] == RECIPIENTS - 3
        assert stats["failed"] == stats["pending"] == 0

        # each message rendered with its own recipient's variables, DKIM-signed over the
        # List-Unsubscribe headers
        sample = w.sinks["d3"].received[:25]
        for m in sample:
            msg = _parse(m.data)
            i = int(m.rcpt_tos[0].split("@")[0][1:])
            assert msg["subject"] == f"Hello N{i}"
            assert _body(msg, "plain").strip() == f"Hi N{i}, your code is C{i}."
            assert f"https://shop.test/offer?c=C{i}" in _body(msg, "html")  # no click tracking
            assert "/t/o/" not in _body(msg, "html")
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            https, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
            assert https.startswith(f"{PUBLIC}/u/") and mailto.startswith("mailto:unsubscribe+")
            signature = dkim.DKIM(m.data)
            assert w.verify_dkim(m.data)
            h = re.search(rb"h=([^;]+);", re.sub(rb"\s+", b"", m.data.split(b"\r\n\r\n")[0]))
            signed = h.group(1).lower().split(b":") if h else []
            assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
            assert signature is not None

        # pacing: the scheduler's own log of batches
        doc = await w.db.campaigns.find_one({"_id": ObjectId(cid)})
        log = [b for b in doc["batch_log"] if b.get("queued") or b.get("suppressed")]
        plan = batch_plan(RATE, w.settings.campaign_batch_max)
        assert all(b["size"] <= plan.size for b in log)
        gaps = [(b["at"] - a["at"]).total_seconds() for a, b in itertools.pairwise(log)]
        assert gaps and min(gaps) >= plan.interval_seconds * 0.99
        span = (log[-1]["at"] - log[0]["at"]).total_seconds() + plan.interval_seconds
        assert RECIPIENTS / span * 60 <= RATE * 1.1  # never faster than the rate (+10%)

        # the unsubscribe from a received message's own header: the next campaign skips them
        first = w.sinks["d0"].received[0]
        https = re.findall(r"<([^>]+)>", _parse(first.data)["List-Unsubscribe"])[0]
        assert (
            await api.http.post(_local_path(https), content=b"List-Unsubscribe=One-Click")
        ).status_code == 200
        again = await s.create(name="Again")
        await s.add(
            again,
            [
                {"email": first.rcpt_tos[0], "variables": {"name": "x", "code": "y"}},
                {"email": "fresh@d0.test", "variables": {"name": "x", "code": "y"}},
            ],
        )
        await s.act(again, "startCampaign")
        st = (await s.finished(again))["stats"]
        assert (st["suppressed"], st["delivered"]) == (1, 1)
        assert _received(w, ["d0"])[first.rcpt_tos[0].lower()] == 1


# --- tracking, person-to-person mail, mailto unsubscribe ------------------------------------

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


async def test_tracking_human_and_machine_opens_and_clicks_and_never_an_open_redirect(settings):
    async with (
        outbound_world(settings, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create(trackOpens=True, trackClicks=True)
        await s.add(
            cid,
            [
                {"email": f"{who}@ok.test", "variables": {"name": who, "code": who.upper()}}
                for who in ("human", "proxied", "scanned")
            ],
        )
        await s.act(cid, "startCampaign")
        await s.finished(cid)
        mail = {m.rcpt_tos[0]: _parse(m.data) for m in w.sinks["ok"].received}
        assert len(mail) == 3

        def urls(address: str) -> tuple[str, list[str]]:
            html = _body(mail[address], "html")
            assert "https://shop.test/" not in html  # every link goes through the redirect
            pixel = re.findall(r'<img src="([^"]+/t/o/[^"]+)"', html)
            return _local_path(pixel[0]), [
                _local_path(u) for u in re.findall(r'href="([^"]+/t/c/[^"]+)"', html)
            ]

        # a person opens and clicks the offer
        pixel, links = urls("human@ok.test")
        assert len(links) == 2
        r = await api.http.get(pixel, headers={"User-Agent": BROWSER})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        assert r.content.startswith(b"GIF89a")
        r = await api.http.get(links[0], headers={"User-Agent": BROWSER})
        assert r.status_code == 302
        assert r.headers["location"] == "https://shop.test/offer?c=HUMAN"

        # Google's image proxy fetches the pixel: a machine open
        pixel, _ = urls("proxied@ok.test")
        assert (await api.http.get(pixel, headers={"User-Agent": GOOGLE_PROXY})).status_code == 200
        # a link scanner follows both links at once (with a browser's user agent): machine
        _, links = urls("scanned@ok.test")
        for link in links:
            assert (await api.http.get(link, headers={"User-Agent": BROWSER})).status_code == 302
        # a HEAD is a machine's too
        assert (await api.http.head(links[0], headers={"User-Agent": BROWSER})).status_code == 302

        # never an open redirect: a link index that was not in the message, an altered token
        (rid,) = [
            r.id
            for r in await campaign_recipients(w.db, ObjectId(cid))
            if r.email == "human@ok.test"
        ]
        secret = w.settings.secret_key.get_secret_value().encode()
        beyond = campaign_tokens.click_token(secret, rid, 2)
        assert (await api.http.get(f"/t/c/{beyond}")).status_code == 404
        token = links[0].rsplit("/", 1)[1]
        altered = token[:5] + ("a" if token[5] != "a" else "b") + token[6:]
        assert (await api.http.get(f"/t/c/{altered}")).status_code == 404
        assert (await api.http.get("/t/c/https%3A%2F%2Fevil.test")).status_code == 404
        assert (await api.http.get(f"/t/o/{altered}")).status_code == 404

        stats = (await s.stats(cid))["stats"]
        assert (stats["opened"], stats["machineOpened"]) == (1, 1)
        assert (stats["clicked"], stats["machineClicked"]) == (1, 1)
        events = await w.db.delivery_events.find(
            {"campaign_id": ObjectId(cid), "event_type": {"$in": ["opened", "clicked"]}}
        ).to_list()
        rules = sorted((e["recipient"], e["event_type"], e["metadata"]["rule"]) for e in events)
        assert rules == [
            ("human@ok.test", "clicked", None),
            ("human@ok.test", "opened", None),
            ("proxied@ok.test", "opened", "known_agent"),
            ("scanned@ok.test", "clicked", "click_burst"),
            ("scanned@ok.test", "clicked", "click_burst"),
            ("scanned@ok.test", "clicked", "head_request"),
        ]
        assert all(e["machine"] == (e["metadata"]["rule"] is not None) for e in events)

        # person-to-person mail: no tracking, no unsubscribe headers, links untouched
        await w.send(["friend@ok.test"], subject="lunch", text="See https://shop.test/menu\n")

        async def arrived() -> bool:
            return bool(w.sinks["ok"].messages_to("friend@ok.test"))

        await _until(arrived, 60, "the person-to-person message")
        raw = w.sinks["ok"].messages_to("friend@ok.test")[0].data
        assert b"/t/o/" not in raw and b"/t/c/" not in raw
        assert b"List-Unsubscribe" not in raw and b"https://shop.test/menu" in raw


async def test_mailto_unsubscribe_through_the_mx(settings):
    from app.mx.server import start_mx
    from tests.support.mx import smtp_send

    gone = {"ok": {"rcpt": {"gone@ok.test": "550 5.1.1 no such user"}}}
    async with (
        outbound_world(settings, sink_options=gone, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create()
        await s.add(
            cid,
            [
                {"email": "reader@ok.test", "variables": {"name": "R", "code": "1"}},
                {"email": "gone@ok.test", "variables": {"name": "G", "code": "2"}},
            ],
        )
        await s.act(cid, "startCampaign")
        done = (await s.finished(cid))["stats"]
        # a bounce is counted (and suppresses), but no DSN lands in the sender's inbox
        assert (done["delivered"], done["bounced"]) == (1, 1)
        assert not await w.db.mailbox_items.count_documents({"user_id": w.sender.user_id})
        header = _parse(w.sinks["ok"].received[0].data)["List-Unsubscribe"]
        mailto = re.findall(r"<mailto:([^>]+)>", header)[0]
        assert mailto.endswith(f"@{SENDER_DOMAIN}")

        mx = await start_mx(w.settings.model_copy(update={"smtp_port": 0}), w.system)
        try:
            forged = "unsubscribe+" + "a" * 36 + f"@{SENDER_DOMAIN}"
            refused = await smtp_send(
                mx.port, b"Subject: x\r\n\r\nx\r\n", mail_from="reader@ok.test", rcpts=[forged]
            )
            assert refused["rcpt_codes"] == [550]
            raw = (
                b"From: reader@ok.test\r\nTo: " + mailto.encode() + b"\r\n"
                b"Subject: unsubscribe\r\nMessage-ID: <u1@ok.test>\r\n\r\nplease\r\n"
            )
            sent = await smtp_send(mx.port, raw, mail_from="reader@ok.test", rcpts=[mailto])
            assert sent["rcpt_codes"] == [250] and sent["data"][0] == 250
        finally:
            await mx.stop(grace=2)
        scope = f"user:{w.sender.user_id}"
        assert await w.system.suppression.suppressed(["reader@ok.test"], scope=scope)
        stats = (await s.stats(cid))["stats"]
        assert stats["unsubscribed"] == 1
        assert await w.system.suppression.suppressed(["gone@ok.test"])  # the hard bounce
        event = await w.db.delivery_events.find_one({"event_type": "unsubscribed"})
        assert event["metadata"] == {"via": "mailto"}


def _report(kind: str, to: str, recipient: str) -> bytes:
    """A DSN (hard bounce after acceptance) or an ARF complaint sent back to ``to``."""
    if kind == "dsn":
        head = "Content-Type: multipart/report; report-type=delivery-status; boundary=B"
        part = (
            "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.ok.test\n\n"
            f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 mailbox gone\n"
        )
    else:
        head = "Content-Type: multipart/report; report-type=feedback-report; boundary=B"
        part = (
            "Content-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
            f"User-Agent: FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: {recipient}\n"
        )
    text = (
        f"From: postmaster@ok.test\nTo: {to}\nSubject: report\n"
        f"Message-ID: <{kind}-{recipient}@ok.test>\nMIME-Version: 1.0\n{head}\n\n"
        f"--B\nContent-Type: text/plain\n\nreport\n\n--B\n{part}\n"
        f"--B\nContent-Type: text/rfc822-headers\n\nFrom: {SENDER_DOMAIN}\n\n--B--\n"
    )
    return text.replace("\n", "\r\n").encode()


async def test_campaign_mail_keeps_no_message_document_and_verp_reports_still_land(settings):
    """Campaign mail to remote addresses has no mailbox view, so it stores no message document
    or blob: each delivery row carries its MIME until its delivery is final. Stats, the event
    log, a message's delivery history and bounces/complaints sent back to the VERP address
    need nothing more."""
    from app.mx.server import start_mx
    from tests.support.mx import smtp_send

    async with (
        outbound_world(settings, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create()
        oid = ObjectId(cid)
        await s.add(cid, _people(3))
        await s.act(cid, "startCampaign")
        before = (await s.finished(cid))["stats"]
        assert (before["delivered"], before["bounced"], before["complained"]) == (3, 0, 0)
        ids = [r.id for r in await campaign_recipients(w.db, oid)]
        assert len(ids) == 3
        assert await w.db.messages.count_documents({"_id": {"$in": ids}}) == 0
        assert await w.db.messages.count_documents({"campaign_id": oid}) == 0
        rows = await w.db.recipients.find({"_id": {"$in": ids}}).to_list()
        assert sorted(r["delivery_status"] for r in rows) == ["sent"] * 3
        assert all("raw" not in r for r in rows), "a final row keeps no MIME"
        assert {r["from"]["email"] for r in rows} == {w.sender.email}
        stored = await w.db.delivery_events.find({"campaign_id": oid}).to_list()
        events = sorted((e["event_type"], e["recipient"]) for e in expand_all(stored))
        # queued + sent, each of the three; the batch's queued ones in one bucket (the sent
        # ones too when one outcome batch wrote them)
        assert [t for t, _ in events] == ["queued"] * 3 + ["sent"] * 3
        assert [d["count"] for d in stored if d["event_type"] == "queued"] == [3]
        # the sender reads one message's delivery history by its id
        history = await w.system.delivery.events_for(w.sender, str(ids[0]))
        assert [e["event_type"] for e in history] == ["queued", "sent"]
        # each its own event (the queued one out of its bucket), of that message alone
        (address,) = {r["address"] for r in rows if r["_id"] == ids[0]}
        assert [e["recipient"] for e in history] == [address, address]
        assert len({e["_id"] for e in history}) == 2
        stranger = Viewer(ObjectId(), "someone@else.test")
        assert await w.system.delivery.events_for(stranger, str(ids[0])) == []
        assert (await s.stats(cid))["stats"] == before

        # reports to the VERP return paths the sinks saw, through the MX
        envelopes = {m.rcpt_tos[0]: m.mail_from for m in w.sinks["ok"].received}
        mx = await start_mx(w.settings.model_copy(update={"smtp_port": 0}), w.system)
        try:
            for kind, who in (("dsn", "p0@ok.test"), ("arf", "p1@ok.test")):
                verp = envelopes[who]
                sent = await smtp_send(
                    mx.port, _report(kind, verp, who), mail_from="", rcpts=[verp]
                )
                assert sent["rcpt_codes"] == [250] and sent["data"][0] == 250, sent
        finally:
            await mx.stop(grace=2)

        async def reported() -> bool:
            kinds = {
                e["event_type"]
                async for e in w.db.delivery_events.find(
                    {"campaign_id": oid, "event_type": {"$in": ["bounced", "complained"]}}
                )
            }
            return kinds == {"bounced", "complained"}

        await _until(reported, 30, "the bounce and the complaint in the campaign's events")
        async for e in w.db.delivery_events.find(
            {"campaign_id": oid, "event_type": {"$in": ["bounced", "complained"]}}
        ):
            # the sending domain, for the reputation counters, although the message is gone
            assert e["sender_domain"] == SENDER_DOMAIN, e
            assert e["recipient"] == (
                "p0@ok.test" if e["event_type"] == "bounced" else "p1@ok.test"
            )
        # a provider's event that names the message only by its Message-ID, as the sinks
        # received it: the campaign message has no message document to find it by
        received = {m.rcpt_tos[0]: m for m in w.sinks["ok"].received}
        quoted = email.message_from_bytes(received["p2@ok.test"].data)["Message-ID"]
        applied = await w.system.bounces.apply(
            report_from_webhook(
                {
                    "id": "provider-1",
                    "type": "bounced",
                    "rfc822_message_id": quoted,
                    "recipient": "p2@ok.test",
                    "diagnostic": "550 5.1.1 user unknown",
                },
                b"",
            )
        )
        assert applied.applied, applied
        bounced = await w.db.recipients.find_one({"address_key": "p2@ok.test", "campaign_id": oid})
        assert bounced["delivery_status"] == "bounced"
        after = (await s.stats(cid))["stats"]
        assert (after["complained"], after["bounced"]) == (1, 2)
        assert await w.system.suppression.suppressed(
            ["p0@ok.test", "p1@ok.test", "p2@ok.test"]
        ) == {"p0@ok.test", "p1@ok.test", "p2@ok.test"}


async def test_a_campaign_to_a_hosted_user_and_a_remote_one_in_one_batch(settings):
    """A hosted recipient's copy is a message in their inbox; the remote one's is its
    delivery row's MIME, sent to its server. Both counted delivered."""
    async with (
        outbound_world(settings, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        bob = await w.system.accounts.create_user(f"bob@{SENDER_DOMAIN}", "long enough pw 1")
        s = await _session(w, api)
        cid = await s.create()
        oid = ObjectId(cid)
        await s.add(
            cid,
            [
                {"email": f"bob@{SENDER_DOMAIN}", "variables": {"name": "Bob", "code": "7"}},
                {"email": "p0@ok.test", "variables": {"name": "P0", "code": "0"}},
            ],
        )
        await s.act(cid, "startCampaign")
        done = (await s.finished(cid))["stats"]
        assert (done["queued"], done["delivered"], done["failed"]) == (2, 2, 0), done
        ids = {r.email: r.id for r in await campaign_recipients(w.db, oid)}
        local = await w.db.messages.find_one({"_id": ids[f"bob@{SENDER_DOMAIN}"]})
        assert local is not None and local["campaign_id"] == oid
        items = await w.db.mailbox_items.find({"user_id": bob["_id"]}).to_list()
        assert [i["message_id"] for i in items] == [local["_id"]]
        assert "raw" not in await w.db.recipients.find_one({"_id": local["_id"]})
        assert await w.db.messages.find_one({"_id": ids["p0@ok.test"]}) is None
        assert [m.rcpt_tos for m in w.sinks["ok"].received] == [["p0@ok.test"]]
        assert "Hello P0" in _parse(w.sinks["ok"].received[0].data)["Subject"]


# --- pause, resume, cancel; warm-up; reputation -------------------------------------------


def _people(n: int, domain: str = "ok.test") -> list[dict[str, Any]]:
    return [
        {"email": f"p{i}@{domain}", "variables": {"name": f"P{i}", "code": str(i)}}
        for i in range(n)
    ]


async def test_pause_resume_cancel_take_effect_before_the_next_batch(settings):
    async with (
        outbound_world(settings, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create(ratePerMinute=120)  # 2 recipients a batch, a batch a second
        await s.add(cid, _people(40))
        assert (await s.act(cid, "resumeCampaign"))["__typename"] == "ValidationError"
        await s.act(cid, "startCampaign")

        async def queued_at_least(n: int) -> Any:
            async def check() -> bool:
                return (await s.stats(cid))["stats"]["queued"] >= n

            return check

        await _until(await queued_at_least(2), 60, "the first batch")
        assert (await s.act(cid, "pauseCampaign"))["campaign"]["status"] == "paused"
        # at most the batch already under way finishes; then nothing more is queued
        after_pause = (await s.stats(cid))["stats"]["queued"]
        await asyncio.sleep(3)  # three batch intervals
        held = (await s.stats(cid))["stats"]
        assert held["queued"] <= after_pause + 2
        await asyncio.sleep(2)
        assert (await s.stats(cid))["stats"]["queued"] == held["queued"]

        assert (await s.act(cid, "resumeCampaign"))["campaign"]["status"] == "sending"
        await _until(await queued_at_least(held["queued"] + 4), 60, "batches after resume")
        assert (await s.act(cid, "cancelCampaign"))["campaign"]["status"] == "canceled"
        final = await s.finished(cid)
        stats = final["stats"]
        assert final["status"] == "canceled" and stats["pending"] == 0
        assert 0 < stats["queued"] < 40
        fresh = await w.db.campaigns.find_one({"_id": ObjectId(cid)})
        listed = await campaign_recipients(w.db, ObjectId(cid))
        canceled = sum(1 for r in listed if lists.state_of(r, fresh) == "canceled")
        assert len(listed) == 40 and canceled + stats["queued"] == 40
        await asyncio.sleep(2)  # a batch job still queued finds the campaign canceled
        counts = _received(w, ["ok"])
        assert sum(counts.values()) == stats["queued"] == (await s.stats(cid))["stats"]["queued"]
        assert set(counts.values()) == {1}
        assert (await s.act(cid, "resumeCampaign"))["__typename"] == "ValidationError"


class _CancelMidBatch:
    """The suppression check of the next batch, with a cancel landing just before it: the
    batch has read its pending recipients and is rendering them when the status changes.
    ``whole`` runs the cancel mutation; otherwise only the status is set, by hand, when the
    batch reaches its transaction."""

    def __init__(self, real: Any, cancel: Any) -> None:
        self.real, self.cancel, self.fired = real, cancel, False

    async def suppressed(self, keys: Any, *, scope: Any) -> Any:
        if not self.fired:
            self.fired = True
            await self.cancel()
        return await self.real.suppressed(keys, scope=scope)


@pytest.mark.parametrize("whole", [True, False], ids=["cancel", "status-only"])
async def test_a_cancel_during_a_running_batch_never_leaves_its_recipients_queued(settings, whole):
    async with (
        outbound_world(settings, worker=False, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create(ratePerMinute=300)  # 5 recipients a batch
        oid = ObjectId(cid)
        await s.add(cid, _people(12))
        await s.act(cid, "startCampaign")
        sender = w.system.campaign_sender
        assert (await sender.run_batch(oid))["queued"] == 5  # the first batch completes

        async def cancel() -> None:
            if whole:
                assert (await s.act(cid, "cancelCampaign"))["campaign"]["status"] == "canceled"
            else:
                await w.db.campaigns.update_one({"_id": oid}, {"$set": {"status": "canceled"}})

        real = sender.suppression
        due = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)  # the next batch is due now
        await w.db.campaigns.update_one({"_id": oid}, {"$set": {"next_batch_at": due}})
        sender.suppression = _CancelMidBatch(real, cancel)  # type: ignore[assignment]
        try:
            outcome = await sender.run_batch(oid)
        finally:
            sender.suppression = real
        assert sender.suppression is real
        assert outcome["ran"] and outcome["queued"] == 0, outcome
        # the second batch's five: canceled, nothing of them stored for delivery
        fresh = await w.db.campaigns.find_one({"_id": oid})
        second = [r for r in await campaign_recipients(w.db, oid) if 5 <= r.seq < 10]
        assert [lists.state_of(r, fresh) for r in second] == ["canceled"] * 5
        ids = [r.id for r in second]
        assert await w.db.messages.count_documents({"_id": {"$in": ids}}) == 0
        stored = await campaign_messages(w.db, oid)
        assert not {r["_id"] for r in stored} & set(ids)
        assert await w.db.delivery_events.count_documents({"message_id": {"$in": ids}}) == 0
        states, unsubscribed = await recipient_states(w.system.mongo, oid)
        assert states["queued"] == 5 == len(stored)
        # a cancel writes nothing for each recipient (lists.state_of): the campaign's status
        # alone makes every recipient above its pending_floor canceled, so the status-only
        # cancel leaves the list as the whole mutation does
        assert states == {"queued": 5, "canceled": 7} and unsubscribed == 0
        assert (await sender.run_batch(oid)) == {"ran": False}  # no further batch


async def test_warmup_ramp_holds_the_rest_until_the_next_day_and_reputation_pauses(settings):
    async with (
        outbound_world(settings, worker=False, **{**WORLD, "campaign_warmup_ramp": [3, 5]}) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create()
        await s.add(cid, _people(12))
        await s.act(cid, "startCampaign")
        sender = w.system.campaign_sender
        oid = ObjectId(cid)
        assert (await sender.run_batch(oid))["queued"] == 3  # day one: 3
        assert (await sender.run_batch(oid)) == {"ran": True, "waiting": "warmup"}
        assert (await sender.run_batch(oid)) == {"ran": False}  # held until tomorrow
        stats = (await s.stats(cid))["stats"]
        assert (stats["queued"], stats["waitingForWarmup"], stats["waiting"]) == (3, 9, "warmup")
        doc = await w.db.campaigns.find_one({"_id": oid})
        assert doc["next_batch_at"].date() > doc["started_at"].date()

        # the next day (the domain sent on one earlier day): 5
        await w.db.campaign_warmup.update_one(
            {"_id": SENDER_DOMAIN}, {"$set": {"days": ["2026-01-01"], "counts": {}}}
        )
        await w.db.campaigns.update_one(
            {"_id": oid}, {"$set": {"next_batch_at": doc["created_at"]}}
        )
        assert (await sender.run_batch(oid))["queued"] == 5
        assert (await sender.run_batch(oid)) == {"ran": True, "waiting": "warmup"}
        stats = (await s.stats(cid))["stats"]
        assert (stats["queued"], stats["waitingForWarmup"]) == (8, 4)

        # after the ramp no limit, but a reputation pause of the domain holds the campaign
        await w.db.campaign_warmup.update_one(
            {"_id": SENDER_DOMAIN}, {"$set": {"days": ["2026-01-01", "2026-01-02"], "counts": {}}}
        )
        await w.db.sending_pauses.insert_one(
            {"_id": f"domain:{SENDER_DOMAIN}", "active": True, "reason": "test"}
        )
        await w.db.campaigns.update_one(
            {"_id": oid}, {"$set": {"next_batch_at": doc["created_at"]}}
        )
        assert (await sender.run_batch(oid)) == {"ran": True, "waiting": "reputation"}
        assert (await s.stats(cid))["stats"]["waiting"] == "reputation"
        await w.db.sending_pauses.delete_many({})
        await w.db.campaigns.update_one(
            {"_id": oid}, {"$set": {"next_batch_at": doc["created_at"]}}
        )
        assert (await sender.run_batch(oid))["queued"] == 4
        await w.db.campaigns.update_one(
            {"_id": oid}, {"$set": {"next_batch_at": doc["created_at"]}}
        )
        assert (await sender.run_batch(oid)) == {"ran": True, "completed": True}
        assert (await s.stats(cid))["status"] == "completed"


# --- domain verification ------------------------------------------------------------------


async def test_domain_verification_ok_missing_wrong_and_unverified_campaigns_refused(
    settings, services
):
    from app.adapters.dns_resolver import DnsResolver
    from app.bootstrap import build_system
    from app.domain.errors import ValidationError
    from app.services.campaigns.domains import DomainVerifier
    from tests.support.dnsmasq import DnsServer

    system = await build_system(settings)
    dns: DnsServer | None = None
    try:
        docs = {}
        for name in ("good.test", "missing.test", "wrong.test"):
            docs[name], _ = await system.accounts.add_domain(name)
        want = {
            name: {(r.type, r.name): r.value for r in system.accounts.dns_records(doc)}
            for name, doc in docs.items()
        }
        good, wrong = want["good.test"], want["wrong.test"]
        sel_good = f"{docs['good.test']['dkim']['selector']}._domainkey.good.test"
        sel_wrong = f"{docs['wrong.test']['dkim']['selector']}._domainkey.wrong.test"
        dns = DnsServer(
            mx={"good.test": [(10, HOST)], "wrong.test": [(10, "mx.elsewhere.test")]},
            a={HOST: "127.0.0.1", "mx.elsewhere.test": "127.0.0.9"},
            txt={
                "good.test": [good[("TXT", "good.test")], "other-verification=1"],
                sel_good: [good[("TXT", sel_good)]],
                "_dmarc.good.test": ["v=DMARC1; p=reject"],
                "wrong.test": ["v=spf1 include:_spf.elsewhere.test -all"],
                sel_wrong: [good[("TXT", sel_good)]],  # someone else's key
                "_dmarc.wrong.test": ["v=DMARC1; rua=mailto:x@wrong.test"],  # no policy
            },
        ).start()
        verifier = DomainVerifier(system.mongo, system.accounts, DnsResolver([dns.address]))

        def statuses(doc: dict[str, Any]) -> dict[str, str]:
            return {r["kind"]: r["status"] for r in doc["verification"]["records"]}

        ok = await verifier.verify("good.test")
        assert statuses(ok) == {"SPF": "ok", "DKIM": "ok", "DMARC": "ok", "MX": "ok"}
        assert ok["verification"]["verified"]
        dmarc = next(r for r in ok["verification"]["records"] if r["kind"] == "DMARC")
        assert dmarc["detail"] == "p=reject"

        missing = await verifier.verify("missing.test")
        assert set(statuses(missing).values()) == {"missing"}
        assert not missing["verification"]["verified"]
        # the exact records to publish
        by_kind = {r["kind"]: r["value"] for r in missing["verification"]["records"]}
        m = want["missing.test"]
        sel_missing = f"{docs['missing.test']['dkim']['selector']}._domainkey.missing.test"
        assert by_kind == {
            "SPF": m[("TXT", "missing.test")],
            "DKIM": m[("TXT", sel_missing)],
            "DMARC": m[("TXT", "_dmarc.missing.test")],
            "MX": m[("MX", "missing.test")],
        }

        bad = await verifier.verify("wrong.test")
        assert statuses(bad) == {"SPF": "wrong", "DKIM": "wrong", "DMARC": "wrong", "MX": "wrong"}
        assert not bad["verification"]["verified"]
        assert {r["kind"]: r["value"] for r in bad["verification"]["records"]}["SPF"] == wrong[
            ("TXT", "wrong.test")
        ]

        # campaigns from an unverified domain are refused on `from`
        user = await system.accounts.create_user("ann@wrong.test", "correct horse battery", "Ann")
        ann = Viewer(user["_id"], user["email"])
        with pytest.raises(ValidationError) as e:
            await create_campaign(system, ann, "x", "whatever")
        assert e.value.fields[0].field == "from"

        # the command line does the same lookups
        env = {
            **os.environ,
            "MAILHUB_MONGODB_URI": settings.mongodb_uri,
            "MAILHUB_MONGODB_DATABASE": settings.mongodb_database,
            "MAILHUB_REDIS_URL": settings.redis_url,
            "MAILHUB_HOSTNAME": HOST,
            "MAILHUB_DNS_SERVERS": dns.address,
        }

        async def verify(domain: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "app.cli", "domains", "verify", domain],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        cli = await verify("good.test")
        assert cli.returncode == 0, cli.stderr
        assert "good.test: verified" in cli.stdout and "DMARC ok" in cli.stdout
        cli = await verify("missing.test")
        assert cli.returncode == 1 and "NOT verified" in cli.stdout
        assert "publish: v=spf1" in cli.stdout
    finally:
        if dns is not None:
            dns.stop()
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


# --- CSV upload and live progress -------------------------------------------------------------

PROGRESS = """subscription($id: ID!) { campaignProgress(id: $id) { recipients pending queued
  delivered suppressed } }"""


async def test_csv_upload_and_live_progress(settings):
    from gql import Client, GraphQLRequest
    from gql.transport.websockets import WebsocketsTransport

    async with (
        outbound_world(settings, **WORLD) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create(ratePerMinute=600)  # 10 a batch, a batch a second
        rows = ["Email,name,code"] + [f"c{i}@ok.test,Name {i},K{i}" for i in range(30)]
        rows += ["not-an-address,x,y", "C3@OK.test,dup,dup", 'c30@ok.test,"Q, Jr",K30']
        r = await api.http.post(
            f"/api/campaigns/{cid}/recipients",
            content="\n".join(rows).encode(),
            headers={"Authorization": f"Bearer {s.token}", "Content-Type": "text/csv"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["added"], body["recipients"]) == (31, 31)
        assert body["duplicates"] == ["C3@ok.test"] and body["invalidCount"] == 1
        assert body["invalid"][0]["email"] == "not-an-address"
        # multipart works too; a file without an email column is the client's error
        r = await api.http.post(
            f"/api/campaigns/{cid}/recipients",
            files={"file": ("list.csv", b"name\nx\n", "text/csv")},
            headers={"Authorization": f"Bearer {s.token}"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
        r = await api.http.post(f"/api/campaigns/{cid}/recipients", content=b"email\nx@ok.test\n")
        assert r.status_code == 401

        url = api.base.replace("http://", "ws://") + "/graphql"
        transport = WebsocketsTransport(
            url=url,
            init_payload={"token": s.token},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        frames = []
        async with Client(transport=transport, fetch_schema_from_transport=False) as ws:
            await s.act(cid, "startCampaign")

            async def collect() -> None:
                request = GraphQLRequest(PROGRESS, variable_values={"id": cid})
                async for frame in ws.subscribe(request):
                    frames.append(frame["campaignProgress"])

            await asyncio.wait_for(collect(), 120)  # the subscription ends by itself
        assert len(frames) >= 2
        queued = [f["queued"] for f in frames]
        assert queued == sorted(queued)  # live, and never backwards
        assert frames[-1] == {
            "recipients": 31,
            "pending": 0,
            "queued": 31,
            "delivered": 31,
            "suppressed": 0,
        }
        msg = _parse(w.sinks["ok"].messages_to("c30@ok.test")[0].data)
        assert _body(msg, "plain").strip() == "Hi Q, Jr, your code is K30."


async def test_unpaced_batches_follow_each_other_without_the_sweep(settings):
    # the sweep would wake a stalled campaign only after 10 minutes: every batch here must be
    # started by the one before it
    world = {**WORLD, "campaign_stall_seconds": 600.0, "campaign_batch_max": 3}
    async with (
        outbound_world(settings, **world) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        s = await _session(w, api)
        cid = await s.create()
        await s.add(cid, _people(10))
        await s.act(cid, "startCampaign")
        final = await s.finished(cid, within=60)
        assert final["status"] == "completed" and final["stats"]["delivered"] == 10
        doc = await w.db.campaigns.find_one({"_id": ObjectId(cid)})
        assert [b["size"] for b in doc["batch_log"]] == [3, 3, 3, 1]
