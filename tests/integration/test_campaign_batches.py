"""The batch sender walks a campaign's list from its floor (issue 15): each batch reads a bounded
``seq`` range, so a batch near the end of a long list costs what the first one did, and an add
of recipients still landing is never passed over.

Real MongoDB-protocol server (the suite's SecantusDB), the real services; batches are run one at
a time through ``CampaignSender.run_batch``, as the ``campaign_batch`` job runs them.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.bootstrap import System, build_system
from app.domain.campaign_tokens import click_token
from app.domain.campaigns import ADD_OPEN_SECONDS, check_recipients
from app.domain.viewer import Viewer
from app.services.campaigns.sender import AHEAD_SECONDS
from app.services.campaigns.stats import recipient_states
from app.services.campaigns.store import recipient_rows
from app.services.feedback.suppression import user_scope
from app.services.templates.store import TemplateDraft
from tests.support.campaigns import campaign_messages, create_campaign
from tests.support.cleanup import drop_database
from tests.support.commands import CommandLog

DOMAIN = "batches.test"
SENDER = f"news@{DOMAIN}"
BATCH = 10


@pytest.fixture
async def world(settings: Any, commands: CommandLog) -> AsyncIterator[tuple[System, Viewer, str]]:
    system = await build_system(
        settings.model_copy(update={"campaign_batch_max": BATCH, "campaign_warmup_ramp": []})
    )
    try:
        await system.accounts.add_domain(DOMAIN)
        # set-up, not under test: the sending domain's DNS records (tested in test_campaigns)
        await system.mongo.db.domains.update_one(
            {"_id": DOMAIN}, {"$set": {"verification": {"verified": True}}}
        )
        user = await system.accounts.create_user(SENDER, "correct horse battery")
        viewer = Viewer(user["_id"], SENDER)
        await system.templates.save(
            viewer, TemplateDraft(key="news", subject="Hi {{ n }}", text="Number {{ n }}.")
        )
        await system.templates.publish(viewer, "news", 1)
        campaign = await create_campaign(system, viewer, "batches", "news")
        yield system, viewer, str(campaign["_id"])
    finally:
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


def _rows(first: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"r{k}@example.test", {"n": k}) for k in range(first, first + n)]


def _docs(cid: str, first: int, rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows ``add_recipients`` inserts for a reservation starting at ``first``."""
    accepted = check_recipients(rows).accepted
    return recipient_rows(ObjectId(cid), first, accepted, datetime.now(UTC))


async def _campaign(system: System, cid: str) -> dict[str, Any]:
    doc = await system.mongo.db.campaigns.find_one({"_id": ObjectId(cid)})
    assert doc is not None
    return doc


async def _batch(system: System, cid: str, *, chain: bool = False) -> dict[str, Any]:
    """One batch at its time (a waiting campaign's next batch is up to a second away);
    ``chain``: as the campaign_batch job runs all but its last (rendering the next ahead)."""
    due = (await _campaign(system, cid))["next_batch_at"].replace(tzinfo=UTC)
    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
    return await system.campaign_sender.run_batch(ObjectId(cid), chain=chain)


async def _queued_seqs(system: System, cid: str) -> list[int]:
    """The seq of every recipient that has a message queued (a row, or a member of a
    parcel: app/services/delivery/parcels.py), once per message."""
    ids = [r["_id"] for r in await campaign_messages(system.mongo.db, ObjectId(cid))]
    seqs = {
        r["_id"]: r["seq"]
        async for r in system.mongo.db.campaign_recipients.find({"_id": {"$in": ids}}, {"seq": 1})
    }
    return sorted(seqs[i] for i in ids)


async def test_batches_walk_the_list_from_the_floor_across_gaps_and_late_adds(world):
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    # an add whose every row turned out a duplicate of a concurrent one leaves a gap of seqs
    first, add = await system.campaigns._reserve(ObjectId(cid), 7)
    await system.campaigns._insert(ObjectId(cid), _docs(cid, first, _rows(0, 7)), add)
    assert (await _campaign(system, cid))["recipients"] == 25
    await system.campaigns.add_recipients(viewer, cid, _rows(25, 10))  # seqs 32..41
    await system.campaigns.transition(viewer, cid, "start")

    taken: list[list[int]] = []
    floors: list[int] = []
    for _ in range(3):
        before = await _queued_seqs(system, cid)
        assert (await _batch(system, cid))["queued"] == BATCH
        taken.append(sorted(set(await _queued_seqs(system, cid)) - set(before)))
        floors.append((await _campaign(system, cid))["pending_floor"])
    assert taken == [
        list(range(0, 10)),
        list(range(10, 20)),
        [20, 21, 22, 23, 24, 32, 33, 34, 35, 36],
    ]
    assert floors == [10, 20, 37]
    # recipients added while the campaign sends come after the rest
    await system.campaigns.add_recipients(viewer, cid, _rows(35, 4))  # seqs 42..45
    assert (await _batch(system, cid))["queued"] == 9  # 37..41 and 42..45
    assert (await _campaign(system, cid))["pending_floor"] == 46
    assert (await _batch(system, cid)).get("completed")
    assert await _queued_seqs(system, cid) == list(range(25)) + list(range(32, 46))
    # every recipient queued, as the stats count them (below the floor, ``pending`` is queued)
    assert await recipient_states(system.mongo, ObjectId(cid)) == {"queued": 39}


async def test_an_add_still_landing_holds_the_floor_and_the_campaign_open(world):
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 30))  # seqs 0..29
    # an add that reserved seqs 30..39 and has not inserted its rows yet ...
    first, slow = await system.campaigns._reserve(ObjectId(cid), 10)
    assert first == 30
    # ... while a later add (seqs 40..49) lands first
    await system.campaigns.add_recipients(viewer, cid, _rows(40, 10))
    await system.campaigns.transition(viewer, cid, "start")
    for _ in range(4):
        assert (await _batch(system, cid))["queued"] == BATCH
    campaign = await _campaign(system, cid)
    assert campaign.get("pending_floor", 0) == 0  # never moved past the open add's seqs
    assert await _queued_seqs(system, cid) == list(range(30)) + list(range(40, 50))
    # nobody pending that anyone can see, but the add is open: the campaign waits, not completes
    assert not (await _batch(system, cid)).get("completed")
    assert (await _campaign(system, cid))["status"] == "sending"
    await system.campaigns._insert(ObjectId(cid), _docs(cid, first, _rows(30, 10)), slow)
    assert (await _campaign(system, cid))["adds_open"] == []
    assert (await _batch(system, cid))["queued"] == BATCH
    assert (await _campaign(system, cid))["pending_floor"] == 40
    assert (await _batch(system, cid)).get("completed")
    assert await _queued_seqs(system, cid) == list(range(50))  # everyone once, no one lost


async def test_an_abandoned_add_stops_holding_the_campaign(world):
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 5))
    # an add whose insert failed long ago (its caller got the error) is not waited for
    await system.mongo.db.campaigns.update_one(
        {"_id": ObjectId(cid)},
        {
            "$push": {
                "adds_open": {
                    "token": "gone",
                    "at": datetime.now(UTC) - timedelta(seconds=ADD_OPEN_SECONDS + 5),
                }
            }
        },
    )
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid))["queued"] == 5
    assert (await _campaign(system, cid))["pending_floor"] == 5
    assert (await _batch(system, cid)).get("completed")


async def test_an_untracked_batch_queues_by_the_floor_alone_and_a_cancel_spares_it(world, commands):
    """With no add open and no tracked links a batch writes nothing to its recipients'
    documents: moving the campaign's floor past them queues them. The stats count them
    queued, the next batch starts above them, and a cancel marks canceled only those left."""
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    commands.clear()
    assert (await _batch(system, cid))["queued"] == BATCH
    touched = [
        c
        for c in commands.commands
        if c.collection == "campaign_recipients" and c.name not in ("find", "getMore")
    ]
    assert touched == []
    assert (await _campaign(system, cid))["pending_floor"] == BATCH
    assert await recipient_states(system.mongo, ObjectId(cid)) == {"queued": 10, "pending": 15}
    assert (await _batch(system, cid))["queued"] == BATCH
    assert await _queued_seqs(system, cid) == list(range(20))  # each once, in order
    await system.campaigns.transition(viewer, cid, "cancel")
    assert await recipient_states(system.mongo, ObjectId(cid)) == {"queued": 20, "canceled": 5}
    stored = await system.mongo.db.campaign_recipients.find(
        {"campaign_id": ObjectId(cid), "state": "canceled"}, {"seq": 1}
    ).to_list()
    assert sorted(r["seq"] for r in stored) == list(range(20, 25))


async def test_tracked_links_are_stored_with_the_batch_state(world, commands):
    """A click-tracked batch stores each recipient's links (where its click redirects may go)
    with its state, in the batch's transaction and in one command: the update by the batch's
    seq range when every message holds the same links, one bulk write when a recipient's
    variables change a link. No second write a recipient."""
    system, viewer, _ = world
    html = (
        '<p><a href="https://shop.test/sale">Sale</a>'
        '{% if own %} <a href="https://shop.test/u/{{ own }}">Yours</a>{% endif %}</p>'
    )
    await system.templates.save(
        viewer, TemplateDraft(key="tracked", subject="Hi {{ n }}", text="Sale.", html=html)
    )
    await system.templates.publish(viewer, "tracked", 1)
    secret = system.settings.secret_key.get_secret_value().encode()
    for name, own_link in (("same", False), ("own", True)):
        campaign = await create_campaign(system, viewer, name, "tracked", track_clicks=True)
        cid = str(campaign["_id"])
        rows = [
            (f"{name}{k}@example.test", {"n": k, "own": str(k % 3) if own_link else ""})
            for k in range(BATCH)
        ]
        await system.campaigns.add_recipients(viewer, cid, rows)
        await system.campaigns.transition(viewer, cid, "start")
        commands.clear()
        assert (await _batch(system, cid))["queued"] == BATCH
        updates = [
            c
            for c in commands.commands
            if (c.name, c.collection) == ("update", "campaign_recipients")
        ]
        assert len(updates) == 1, name
        async for r in system.mongo.db.campaign_recipients.find({"campaign_id": ObjectId(cid)}):
            k = int(r["email"].removeprefix(name).split("@")[0])
            want = ["https://shop.test/sale"] + (
                [f"https://shop.test/u/{k % 3}"] if own_link else []
            )
            assert (r["state"], r["links"]) == ("queued", want)
            for index, url in enumerate(want):
                token = click_token(secret, r["_id"], index)
                assert await system.tracking.click(token, method="GET", user_agent="Mail") == url


async def test_the_next_batch_renders_ahead_and_still_reads_suppressions_when_it_runs(world):
    """An unpaced batch renders the next one while it commits; the next batch takes those
    messages, but the suppression list it checks is the one in force when it runs: an
    unsubscribe after the render still stops that recipient's message."""
    system, viewer, cid = world
    sender = system.campaign_sender
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid, chain=True))["queued"] == BATCH
    ahead = sender._ahead[ObjectId(cid)]
    pending, built = await ahead.task  # seqs 10..19, rendered and built
    assert [r["seq"] for r in pending] == list(range(10, 20))
    await system.suppression.add(
        "r12@example.test", reason="unsubscribe", scope=user_scope(viewer.user_id)
    )
    taken = sender.ahead_taken
    assert (await _batch(system, cid, chain=True)) == {
        "ran": True,
        "queued": BATCH - 1,
        "suppressed": 1,
        "failed": 0,
        "next_now": True,
    }
    assert sender.ahead_taken == taken + 1
    assert await _queued_seqs(system, cid) == [k for k in range(20) if k != 12]
    messages = await campaign_messages(system.mongo.db, ObjectId(cid))
    bodies = {m["address"]: m["raw"] for m in messages if m.get("raw")}
    assert b"Number 15." in bodies["r15@example.test"]
    assert (await _batch(system, cid))["queued"] == 5
    assert (await _batch(system, cid)).get("completed")
    assert await recipient_states(system.mongo, ObjectId(cid)) == {"queued": 24, "suppressed": 1}


async def test_a_batch_rendered_ahead_is_dropped_when_another_process_ran_the_batch(world):
    """What one process rendered ahead is taken only from the floor it was read at: when
    another process (another worker) ran that batch meanwhile, the next batch here reads
    the list again, and nobody is queued twice."""
    system, viewer, cid = world
    sender = system.campaign_sender
    other = copy.copy(sender)
    other._ahead, other.ahead_taken = {}, 0
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 30))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid, chain=True))["queued"] == BATCH  # 0..9; 10..19 ahead
    await sender._ahead[ObjectId(cid)].task
    assert (await other.run_batch(ObjectId(cid)))["queued"] == BATCH  # there: 10..19
    taken = sender.ahead_taken
    assert (await _batch(system, cid, chain=True))["queued"] == BATCH  # 20..29, read afresh
    assert sender.ahead_taken == taken
    assert await _queued_seqs(system, cid) == list(range(30))  # each once


async def test_a_paced_campaign_does_not_render_ahead_and_a_stale_render_is_not_taken(world):
    """Batches paced apart do not wait on each other: nothing is rendered ahead for them. An
    unpaced campaign's render ahead older than ``AHEAD_SECONDS`` is dropped, not sent."""
    system, viewer, cid = world
    sender = system.campaign_sender
    paced = await create_campaign(system, viewer, "paced", "news", rate_per_minute=600)
    await system.campaigns.add_recipients(viewer, str(paced["_id"]), _rows(100, 25))
    await system.campaigns.transition(viewer, str(paced["_id"]), "start")
    assert (await _batch(system, str(paced["_id"]), chain=True))["queued"] == BATCH
    assert paced["_id"] not in sender._ahead

    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid, chain=True))["queued"] == BATCH
    ahead = sender._ahead[ObjectId(cid)]
    await ahead.task
    sender._ahead[ObjectId(cid)] = ahead._replace(started=ahead.started - AHEAD_SECONDS - 1)
    taken = sender.ahead_taken
    assert (await _batch(system, cid))["queued"] == BATCH
    assert sender.ahead_taken == taken
    assert await _queued_seqs(system, cid) == list(range(20))


async def _batch_jobs(system: System, cid: str) -> list[str]:
    """The campaign's campaign_batch jobs waiting in Redis (arq's job keys)."""
    pool = await system.queue.pool()
    return sorted(k.decode() for k in await pool.keys(f"arq:job:campaign:{cid}:*"))


async def test_the_job_runs_an_unpaced_campaigns_batches_in_one_chain(world):
    """The campaign_batch job runs an unpaced campaign's batches one after another in its
    process (each taking what the one before rendered ahead) and enqueues no job between
    them; with its time used up it runs one batch, renders nothing ahead and hands the
    campaign on to the next job."""
    system, viewer, cid = world
    sender = system.campaign_sender
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    taken = sender.ahead_taken
    result = await sender.run_batches(ObjectId(cid))
    assert (result["completed"], result["chained"]) == (True, 4)  # 10, 10, 5, then done
    assert sender.ahead_taken == taken + 2
    assert await _queued_seqs(system, cid) == list(range(25))
    # no job enqueued between the batches: only the start's wake-up, which a worker would run
    assert await _batch_jobs(system, cid) == [f"arq:job:campaign:{cid}:0"]

    other = await create_campaign(system, viewer, "handed on", "news")
    oid = other["_id"]
    await system.campaigns.add_recipients(viewer, str(oid), _rows(100, 25))
    await system.campaigns.transition(viewer, str(oid), "start")
    result = await sender.run_batches(oid, seconds=0)
    assert (result["queued"], result["chained"]) == (BATCH, 1)
    assert oid not in sender._ahead
    assert await _batch_jobs(system, str(oid)) == [
        f"arq:job:campaign:{oid}:0",  # the start's wake-up
        f"arq:job:campaign:{oid}:1",  # the next batch's: handed on
    ]
