"""Outbound webhooks against a real HTTP receiver on loopback, and the event log they carry
(issue 14): signatures, retries with backoff, at-least-once across a killed worker, replay."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.domain.verp import make_verp_address
from app.domain.webhooks import verify_signature
from app.mx.server import start_mx
from tests.e2e.test_inbound_bounces import arf, dsn
from tests.support.http_servers import ApiClient, mailhub_api, webhook_receiver
from tests.support.mx import smtp_send
from tests.support.outbound import Outbound, outbound_world
from tests.support.worker_process import start_worker_process, wait_until

LOGIN = """mutation { login(email: "alice@example.test", password: "correct horse battery") {
  ... on LoginSuccess { token } } }"""
CREATE = """mutation($u: String!, $e: [String!]!) { createWebhook(url: $u, events: $e) {
  __typename ... on WebhookCreated { secret endpoint { id url events active failing } }
  ... on ValidationError { fields { field message } } } }"""
WEBHOOKS = "{ webhooks { id active failing lastError lastSuccessAt } }"
EVENTS = """query($t: [String!], $a: String, $f: Int) { events(types: $t, after: $a, first: $f) {
  edges { cursor node { id type at messageId recipient machine data } }
  pageInfo { hasNextPage endCursor } } }"""
FAST = {
    "event_settle_seconds": 0.3,
    "webhook_retry_base_seconds": 0.2,
    "webhook_retry_max_seconds": 1.0,
    "webhook_timeout_seconds": 2.0,
}


async def _login(api: ApiClient) -> str:
    return str((await api.gql(LOGIN))["data"]["login"]["token"])


async def _create(api: ApiClient, token: str, url: str, events: list[str]) -> dict[str, Any]:
    created = (await api.gql(CREATE, {"u": url, "e": events}, token))["data"]["createWebhook"]
    assert created["__typename"] == "WebhookCreated", created
    return created  # type: ignore[no-any-return]


async def _all_events(api: ApiClient, token: str, types: list[str] | None = None) -> list[Any]:
    out, after = [], None
    while True:
        page = (await api.gql(EVENTS, {"t": types, "a": after, "f": 50}, token))["data"]["events"]
        out += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return out
        after = page["pageInfo"]["endCursor"]


def _verp(w: Outbound, message_id: Any, recipient: dict[str, Any]) -> str:
    return make_verp_address(
        domain="example.test",
        message_id=str(message_id),
        recipient_id=str(recipient["_id"]),
        secret=w.settings.secret_key.get_secret_value().encode(),
    )


async def test_events_reach_the_endpoint_signed_once_each_after_retries_and_replay(settings):
    types = ["sent", "delivered", "bounced", "complained"]
    async with (
        outbound_world(settings, **FAST) as w,
        mailhub_api(w.settings, w.system) as api,
        webhook_receiver(script=[500, 500, 500]) as receiver,
    ):
        await w.system.accounts.create_user("dave@example.test", "correct horse battery", "Dave")
        token = await _login(api)
        created = await _create(api, token, receiver.url, types)
        secret = created["secret"]
        assert secret.startswith("whsec_") and created["endpoint"]["failing"] is False

        await w.send(["dave@example.test"], subject="local")  # delivered at once
        sent = await w.send(["bob@ok.test", "nobody@ok.test", "carol@ok.test"], subject="remote")
        await w.wait_statuses(
            sent["message_id"],
            {"bob@ok.test": "sent", "nobody@ok.test": "sent", "carol@ok.test": "sent"},
        )
        recipients = await w.recipients(sent["message_id"])
        mx = await start_mx(w.settings, w.system)
        try:
            to = _verp(w, sent["message_id"], recipients["nobody@ok.test"])
            raw = dsn(to, "nobody@ok.test", "5.1.1", "550 5.1.1 user unknown")
            assert (await smtp_send(mx.port, raw, mail_from="", rcpts=[to]))["data"][0] == 250
            to = _verp(w, sent["message_id"], recipients["carol@ok.test"])
            assert (await smtp_send(mx.port, arf(to), mail_from="", rcpts=[to]))["data"][0] == 250
        finally:
            await mx.stop()

        async def failing_visible() -> bool:
            hooks = (await api.gql(WEBHOOKS, token=token))["data"]["webhooks"]
            return bool(hooks[0]["lastError"]) and "500" in hooks[0]["lastError"]

        await wait_until(failing_visible, 30, "the failed POSTs to show as lastError")

        async def everything_arrived() -> bool:
            got = Counter(e["type"] for e in receiver.accepted_events())
            return (
                got["sent"] >= 3
                and got["delivered"] >= 1
                and got["bounced"] >= 1
                and (got["complained"] >= 1)
            )

        await wait_until(everything_arrived, 60, "sent, delivered, bounced and complained events")

        assert [d.status for d in receiver.deliveries[:3]] == [500, 500, 500]
        for d in receiver.deliveries:
            assert verify_signature(secret, d.signature, d.body)
            assert not verify_signature("whsec_wrong", d.signature, d.body)
            # in event-time order: compared as times (ISO 8601 leaves out a zero fraction,
            # so "…:35Z" sorts after "…:35.022000Z" as text)
            times = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in d.events]
            assert times == sorted(times)
        accepted = receiver.accepted_events()
        ids = [e["id"] for e in accepted]
        assert len(ids) == len(set(ids))  # exactly once after the retries
        failed_ids = {e["id"] for d in receiver.deliveries[:3] for e in d.events}
        assert failed_ids <= set(ids)  # what failed came again, with the same ids
        by_type = {e["type"]: e for e in accepted}
        assert by_type["delivered"]["recipient"] == "dave@example.test"
        assert by_type["bounced"]["recipient"] == "nobody@ok.test"
        assert by_type["bounced"]["data"]["bounce_class"]
        assert by_type["complained"]["recipient"] == "carol@ok.test"
        assert {e["messageId"] for e in accepted if e["type"] == "sent"} == {
            str(sent["message_id"])
        }

        async def succeeded_last() -> bool:
            # the dispatcher records the success once the receiver's answer is back, after
            # the receiver has counted the events: wait for it rather than race it
            hooks = (await api.gql(WEBHOOKS, token=token))["data"]["webhooks"]
            return hooks[0]["lastError"] is None and bool(hooks[0]["lastSuccessAt"])

        await wait_until(succeeded_last, 30, "the last POST's success to clear lastError")

        # the log itself: the same events, replayable from any cursor
        log = await _all_events(api, token, types)
        assert [e["id"] for e in log] == sorted(ids, key=lambda i: ObjectId(i))
        middle = log[len(log) // 2]["id"]
        tail = (await api.gql(EVENTS, {"t": types, "a": middle, "f": 100}, token))["data"]
        assert [e["node"]["id"] for e in tail["events"]["edges"]] == [
            e["id"] for e in log[len(log) // 2 + 1 :]
        ]
        everything = await _all_events(api, token)
        assert {"queued", "sent", "delivered", "bounced", "complained"} <= {
            e["type"] for e in everything
        }
        again = await _all_events(api, token)
        assert again == everything  # a replay reads the same events


async def test_an_endpoint_failing_past_the_retry_window_is_marked_failing(settings):
    async with (
        outbound_world(settings, worker=True, webhook_retry_window_seconds=1.0, **FAST) as w,
        mailhub_api(w.settings, w.system) as api,
        webhook_receiver(script=[503] * 1000) as receiver,
    ):
        await w.system.accounts.create_user("dave@example.test", "correct horse battery", "Dave")
        token = await _login(api)
        await _create(api, token, receiver.url, ["delivered"])
        await w.send(["dave@example.test"], subject="local")

        async def failing() -> bool:
            hooks = (await api.gql(WEBHOOKS, token=token))["data"]["webhooks"]
            return bool(hooks[0]["failing"])

        await wait_until(failing, 30, "the endpoint to be marked failing")
        hooks = (await api.gql(WEBHOOKS, token=token))["data"]["webhooks"]
        assert hooks[0]["active"] is True and "503" in hooks[0]["lastError"]
        assert len(receiver.deliveries) >= 2 and receiver.accepted_events() == []


async def test_webhook_urls_to_internal_addresses_are_refused_in_production(settings):
    async with (
        outbound_world(settings, worker=False, webhook_allow_private=False) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        token = await _login(api)
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://10.0.0.8/x",
            "gopher://example.com/",
        ):
            refused = (await api.gql(CREATE, {"u": url, "e": ["sent"]}, token))["data"]
            assert refused["createWebhook"]["__typename"] == "ValidationError", url
            assert refused["createWebhook"]["fields"][0]["field"] == "url"
        unknown = (await api.gql(CREATE, {"u": "http://x.test/", "e": ["nope"]}, token))["data"]
        assert unknown["createWebhook"]["fields"][0]["field"] == "events"


async def test_a_worker_killed_mid_post_loses_no_event_and_repeats_ids(settings):
    async with (
        outbound_world(settings, worker=False, webhook_batch_size=5, **FAST) as w,
        mailhub_api(w.settings, w.system) as api,
        webhook_receiver() as receiver,
    ):
        await w.system.accounts.create_user("dave@example.test", "correct horse battery", "Dave")
        token = await _login(api)
        await _create(api, token, receiver.url, ["queued", "delivered"])
        for n in range(8):
            await w.send(["dave@example.test"], subject=f"m{n}")  # 16 events
        expected = {
            str(e["_id"]) for e in await w.db.delivery_events.find({}, {"_id": 1}).to_list()
        }
        assert len(expected) == 16

        first_post = asyncio.Event()
        release = asyncio.Event()

        async def stall_first() -> None:  # the worker dies while this POST waits
            if not first_post.is_set():
                first_post.set()
                await release.wait()

        receiver.before = stall_first
        process = start_worker_process(
            w.settings,
            event_settle_seconds=str(w.settings.event_settle_seconds),
            webhook_timeout_seconds=str(w.settings.webhook_timeout_seconds),
            webhook_batch_size=str(w.settings.webhook_batch_size),
        )
        try:
            await asyncio.wait_for(first_post.wait(), 60)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        release.set()

        await w.start_worker()  # the dead worker's lease on the endpoint runs out first

        async def all_arrived() -> bool:
            return {e["id"] for e in receiver.accepted_events()} >= expected

        await wait_until(all_arrived, 60, "every event after the crash")
        seen = Counter(e["id"] for e in receiver.accepted_events())
        assert set(seen) == expected  # nothing lost, nothing invented
        assert all(n <= 2 for n in seen.values())
        # the POST the dead worker made (recorded when the receiver answered, after the kill)
        # never moved the cursor: the next worker sent that batch again, with the same ids
        stalled = next(d for d in receiver.deliveries if d.events[0]["id"] == min(expected))
        again = {e["id"] for e in stalled.events}
        assert len(again) == 5 and all(seen[i] == 2 for i in again)
        assert sum(seen.values()) == len(expected) + 5


async def test_dispatch_skips_a_quiet_stretch_but_never_past_an_event(settings):
    from datetime import UTC, datetime, timedelta

    from app.domain.viewer import Viewer

    async with outbound_world(settings, worker=False, **FAST) as w:
        viewer = Viewer(w.sender.user_id, w.sender.email)
        _, endpoint = await w.system.webhooks.create(viewer, "http://127.0.0.1:9/h", ["sent"])
        old = ObjectId.from_datetime(datetime.now(UTC) - timedelta(minutes=10))
        await w.db.webhooks.update_one({"_id": endpoint["_id"]}, {"$set": {"cursor": old}})
        event_id = ObjectId.from_datetime(datetime.now(UTC) - timedelta(minutes=5))
        await w.db.delivery_events.insert_one(
            {
                "_id": event_id,
                "sender_user_id": viewer.user_id,
                "event_type": "sent",
                "occurred_at": event_id.generation_time,
                "metadata": {},
            }
        )
        assert await w.system.webhooks.dispatch() == 1  # an event is due: a job, no skipping
        doc = await w.db.webhooks.find_one({"_id": endpoint["_id"]})
        assert doc["cursor"] == old

        await w.db.webhooks.update_one({"_id": endpoint["_id"]}, {"$set": {"cursor": event_id}})
        assert await w.system.webhooks.dispatch() == 0  # quiet since: the cursor moves up
        doc = await w.db.webhooks.find_one({"_id": endpoint["_id"]})
        assert doc["cursor"] > event_id
        assert await w.system.event_log.read(viewer.user_id, ["sent"], doc["cursor"], 10) == []


async def test_a_dead_endpoint_delays_neither_mail_nor_another_endpoint(settings):
    async with (
        outbound_world(settings, **FAST) as w,
        mailhub_api(w.settings, w.system) as api,
        webhook_receiver() as slow,
        webhook_receiver() as fast,
    ):
        hang = asyncio.Event()

        async def never_answer() -> None:  # longer than the POST timeout, every time
            await asyncio.wait_for(hang.wait(), 30)

        slow.before = never_answer
        token = await _login(api)
        await _create(api, token, slow.url, ["sent"])
        await _create(api, token, fast.url, ["sent"])
        sent = await w.send(["bob@ok.test"], subject="first")
        await w.wait_statuses(sent["message_id"], {"bob@ok.test": "sent"})

        async def fast_has(n: int) -> bool:
            return len([e for e in fast.accepted_events() if e["type"] == "sent"]) >= n

        await wait_until(lambda: fast_has(1), 30, "the fast endpoint's first event")
        # the slow endpoint is still failing its first POSTs; mail and the other endpoint go on
        second = await w.send(["carol@ok.test"], subject="second")
        await w.wait_statuses(second["message_id"], {"carol@ok.test": "sent"})
        await wait_until(lambda: fast_has(2), 30, "the fast endpoint's second event")
        assert slow.accepted_events() == []

        async def slow_failed() -> bool:  # its POSTs time out and are retried with backoff
            hooks = (await api.gql(WEBHOOKS, token=token))["data"]["webhooks"]
            return any(h["lastError"] and not h["lastSuccessAt"] for h in hooks)

        await wait_until(slow_failed, 30, "the slow endpoint's timeout to be recorded")
        hang.set()
