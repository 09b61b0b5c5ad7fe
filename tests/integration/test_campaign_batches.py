"""The batch sender walks a campaign's list from its floor (issue 15): each batch reads the
parts of a bounded ``seq`` range, so a batch near the end of a long list costs what the first
one did; an add of recipients is stored whole or not at all, each address once.

Real MongoDB-protocol server (the suite's SecantusDB), the real services; batches are run one at
a time through ``CampaignSender.run_batch``, as the ``campaign_batch`` job runs them.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from app.bootstrap import System, build_system
from app.domain.campaign_tokens import click_token, unsubscribe_token
from app.domain.viewer import Viewer
from app.services.campaigns import lists, messages, store
from app.services.campaigns.sender import AHEAD_SECONDS
from app.services.campaigns.stats import recipient_states
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
    seqs = {r.id: r.seq for r in await _recipients(system, cid)}
    return sorted(seqs[i] for i in ids)


async def _recipients(system: System, cid: str) -> list[lists.Recipient]:
    parts = system.mongo.db.campaign_lists.find({"campaign_id": ObjectId(cid)}).sort("seq", 1)
    return [r for part in await parts.to_list() for r in lists.recipients_of(part)]


async def _states(system: System, cid: str) -> dict[str, int]:
    states, _ = await recipient_states(system.mongo, ObjectId(cid))
    return states


async def test_batches_walk_the_list_from_the_floor_across_parts_and_late_adds(world):
    system, viewer, cid = world
    system.campaign_sender.helpers.count = 0  # renders in the sender's threads, as configured
    # parts of 7, 25 and 3: batches of 10 cross them
    for first, n in ((0, 7), (7, 25), (32, 3)):
        await system.campaigns.add_recipients(viewer, cid, _rows(first, n))
    parts = await system.mongo.db.campaign_lists.find({"campaign_id": ObjectId(cid)}).to_list()
    assert sorted((p["seq"], p["end"]) for p in parts) == [(0, 7), (7, 32), (32, 35)]
    await system.campaigns.transition(viewer, cid, "start")

    taken: list[list[int]] = []
    floors: list[int] = []
    for _ in range(3):
        before = await _queued_seqs(system, cid)
        assert (await _batch(system, cid))["queued"] == BATCH
        taken.append(sorted(set(await _queued_seqs(system, cid)) - set(before)))
        floors.append((await _campaign(system, cid))["pending_floor"])
    assert taken == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert floors == [10, 20, 30]
    # recipients added while the campaign sends come after the rest
    await system.campaigns.add_recipients(viewer, cid, _rows(35, 4))  # seqs 35..38
    assert (await _batch(system, cid))["queued"] == 9  # 30..34 and 35..38
    assert (await _campaign(system, cid))["pending_floor"] == 39
    assert (await _batch(system, cid)).get("completed")
    assert await _queued_seqs(system, cid) == list(range(39))
    # every recipient queued, as the stats count them (below the floor, ``pending`` is queued)
    assert await _states(system, cid) == {"queued": 39}
    assert system.campaign_sender.helpers._pool is None


async def test_concurrent_adds_store_each_address_once(world):
    """Adds of overlapping lists at the same time: each address is stored once and reported
    a duplicate to every other add, the numbers stay contiguous and the count is exact (the
    check for repeats and the insert are one transaction with the campaign's count)."""
    system, viewer, cid = world
    lists_ = [_rows(first, 40) for first in (0, 10, 20, 30, 35)]
    results = await asyncio.gather(
        *(system.campaigns.add_recipients(viewer, cid, rows) for rows in lists_)
    )
    accepted = [len(checked.accepted) for _, checked in results]
    duplicates = [len(checked.duplicates) for _, checked in results]
    assert sum(accepted) == 75 and sum(duplicates) == 5 * 40 - 75
    stored = await _recipients(system, cid)
    assert sorted(r.key for r in stored) == sorted(f"r{k}@example.test" for k in range(75))
    assert [r.seq for r in stored] == list(range(75))
    campaign = await _campaign(system, cid)
    assert (campaign["recipients"], campaign["next_seq"]) == (75, 75)
    # and an add of what the list has already stores nothing and reports it all
    _, again = await system.campaigns.add_recipients(viewer, cid, _rows(70, 10))
    assert (len(again.accepted), len(again.duplicates)) == (5, 5)
    assert (await _campaign(system, cid))["recipients"] == 80


async def test_a_batch_at_the_end_of_a_long_list_reads_only_its_window(world, commands):
    """A batch near the end of a list of many parts reads the list from its index, examining
    only the parts of its window, and sends no findAndModify. On the suite's SecantusDB the
    window read once named ``seq`` beside its index's range on ``end`` and scanned the whole
    collection: 242 ms of its CPU a batch at the end of a 1,000,000-recipient list; and a
    findAndModify by ``_id`` that matches scans the collection too: the claim and release of
    a batch took 495 ms of its CPU with 5,000 campaigns stored (docs/benchmarks.md,
    "Twenty-ninth session"). (Its ``explain`` agrees with the time spent for the window read;
    for ``_id`` with another field beside it, it reports scans that do not happen.)"""
    system, viewer, cid = world
    for first in range(0, 300, BATCH):  # 30 parts of 10
        await system.campaigns.add_recipients(viewer, cid, _rows(first, BATCH))
    await system.campaigns.transition(viewer, cid, "start")
    # set-up, as the 28 batches before this one would leave it: their recipients queued
    await system.mongo.db.campaigns.update_one(
        {"_id": ObjectId(cid)}, {"$set": {"pending_floor": 280}}
    )
    commands.clear()
    assert (await _batch(system, cid))["queued"] == BATCH
    windows = commands.finds("campaign_lists")
    assert "findAndModify" not in commands.names
    assert await _queued_seqs(system, cid) == list(range(280, 290))
    assert windows
    for query in windows:
        explained = await system.mongo.db.command(
            "explain", {"find": "campaign_lists", "filter": query}, verbosity="executionStats"
        )
        assert "COLLSCAN" not in str(explained["queryPlanner"]["winningPlan"]), explained
        assert explained["executionStats"]["totalDocsExamined"] <= 2, (query, explained)


async def test_a_batch_does_not_complete_a_campaign_an_add_just_grew(world):
    """A batch that finds nobody pending completes the campaign only if no add committed
    since it read the campaign; otherwise the next batch sends the added recipients."""
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, BATCH))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid))["queued"] == BATCH
    read = await _campaign(system, cid)  # what the next batch read before the add committed
    await system.campaigns.add_recipients(viewer, cid, _rows(BATCH, 3))
    outcome = await system.campaign_sender._batch(read, datetime.now(UTC), False)
    assert not outcome.get("completed")
    assert (await _campaign(system, cid))["status"] == "sending"
    assert (await _batch(system, cid))["queued"] == 3
    assert (await _batch(system, cid)).get("completed")
    assert await _queued_seqs(system, cid) == list(range(BATCH + 3))


async def test_an_untracked_batch_queues_by_the_floor_alone_and_a_cancel_spares_it(world, commands):
    """With no tracked links and nobody suppressed a batch writes nothing to the list: moving
    the campaign's floor past its recipients queues them. The stats count them queued, the
    next batch starts above them, and a cancel cancels only those left, writing nothing."""
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    commands.clear()
    assert (await _batch(system, cid))["queued"] == BATCH
    touched = [
        c
        for c in commands.commands
        if c.collection == "campaign_lists" and c.name not in ("find", "getMore")
    ]
    assert touched == []
    assert (await _campaign(system, cid))["pending_floor"] == BATCH
    assert await _states(system, cid) == {"queued": 10, "pending": 15}
    assert (await _batch(system, cid))["queued"] == BATCH
    assert await _queued_seqs(system, cid) == list(range(20))  # each once, in order
    commands.clear()
    await system.campaigns.transition(viewer, cid, "cancel")
    assert [c for c in commands.commands if c.collection == "campaign_lists"] == []
    assert await _states(system, cid) == {"queued": 20, "canceled": 5}
    campaign = await _campaign(system, cid)
    canceled = [
        r.seq for r in await _recipients(system, cid) if lists.state_of(r, campaign) == "canceled"
    ]
    assert canceled == list(range(20, 25))


async def test_tracked_links_are_stored_with_the_batch_state(world, commands):
    """A click-tracked batch stores each recipient's links (where its click redirects may go)
    in the batch's transaction and in one command (an update of each part the batch read),
    whether every message holds the same links or a recipient's variables change a link."""
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
            c for c in commands.commands if (c.name, c.collection) == ("update", "campaign_lists")
        ]
        assert len(updates) == 1, name
        campaign = await _campaign(system, cid)
        for r in await _recipients(system, cid):
            k = int(r.email.removeprefix(name).split("@")[0])
            want = ["https://shop.test/sale"] + (
                [f"https://shop.test/u/{k % 3}"] if own_link else []
            )
            assert (lists.state_of(r, campaign), list(r.links)) == ("queued", want)
            for index, url in enumerate(want):
                token = click_token(secret, r.id, index)
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
    assert [r.seq for r in pending] == list(range(10, 20))
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
    assert await _states(system, cid) == {"queued": 24, "suppressed": 1}


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


async def test_render_helpers_build_what_the_sender_builds_and_a_dead_one_loses_nothing(world):
    """A worker's batches are rendered in a helper process (messages.py): byte for byte the
    message the sender builds itself. A helper killed while it renders loses nothing: the
    call answers None (the batch then renders in the sender's threads), the pool is dropped
    and the next batch starts a new helper."""
    system, viewer, cid = world
    sender = system.campaign_sender
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 25))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid))["queued"] == BATCH
    pool = sender.helpers._pool
    assert pool is not None and pool.calls >= 1 and pool.alive == 1

    recipients = (await _recipients(system, cid))[:3]
    campaign = await _campaign(system, cid)
    version = await system.mongo.db.template_versions.find_one({"_id": campaign["version_id"]})
    now = datetime.now(UTC)
    rows = [(r.id, r.email, r.variables) for r in recipients]
    helped = await sender.helpers.render(campaign, version, rows, now)
    rendered = await system.renderer.render_versions([(version, r.variables) for r in recipients])
    here = [
        messages.build(campaign, r.id, r.email, answer, now, sender.signing)
        for r, answer in zip(recipients, rendered, strict=True)
    ]
    assert helped is not None and [b.raw for b in helped] == [b.raw for b in here]
    assert b"Number 1." in helped[1].raw
    # the bytes alone cross the pipe (the sender builds a hosted recipient's message itself)
    assert [(b.message, b.error) for b in helped] == [(None, None)] * 3

    # a helper killed while it renders: the call says so (None), the pool is dropped
    (pid,) = pool.pids
    many = [(ObjectId(), f"m{k}@example.test", {"n": k}) for k in range(3000)]
    call = asyncio.create_task(sender.helpers.render(campaign, version, many, now))
    await asyncio.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    assert await call is None
    assert sender.helpers._pool is None
    assert (await _batch(system, cid))["queued"] == BATCH  # 10..19
    assert (await _batch(system, cid))["queued"] == 5
    assert await _queued_seqs(system, cid) == list(range(25))
    renewed = sender.helpers._pool
    assert renewed is not None and renewed.alive == 1 and renewed.pids != [pid]


async def test_a_helper_whose_code_is_not_the_workers_does_not_start(world, monkeypatch):
    """A helper imports its code from disk when it starts: after an upgrade under a running
    worker it would speak another version of the exchange. It refuses to start, and the
    batches render in the sender's threads, every recipient queued (messages.py)."""
    system, viewer, cid = world
    monkeypatch.setattr(messages, "CODE", "the code this worker started with")
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 12))
    await system.campaigns.transition(viewer, cid, "start")
    assert (await _batch(system, cid))["queued"] == BATCH
    assert (await _batch(system, cid))["queued"] == 2
    helpers = system.campaign_sender.helpers
    assert helpers._pool is None and helpers._failed_at > 0  # tried once, not every batch
    assert await _queued_seqs(system, cid) == list(range(12))


async def test_a_long_upload_goes_in_chunks_each_address_once(world, monkeypatch):
    """A CSV upload is stored ``ADD_CHUNK`` recipients a transaction: addresses the list has
    from an earlier add, and repeats within the upload, are reported, never stored twice, and
    the numbers stay contiguous across the chunks."""
    system, viewer, cid = world
    monkeypatch.setattr(store, "ADD_CHUNK", 10)
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 3))
    rows = _rows(2, 25) + [("R20@example.test", {"n": 99})]  # r2 is listed; R20 is r20 again
    _, checked = await system.campaigns.add_recipients(viewer, cid, rows, csv=True)
    assert len(checked.accepted) == 24
    assert sorted(checked.duplicates) == ["R20@example.test", "r2@example.test"]
    stored = await _recipients(system, cid)
    assert [r.seq for r in stored] == list(range(27))
    assert sorted(r.key for r in stored) == sorted(f"r{k}@example.test" for k in range(27))
    parts = await system.mongo.db.campaign_lists.count_documents({"campaign_id": ObjectId(cid)})
    assert parts == 4  # the first add's, then chunks of 10, 10 and 4
    assert (await _campaign(system, cid))["recipients"] == 27


async def test_a_list_stored_before_the_parts_moves_into_parts_keeping_its_ids(world):
    """The start-up migration (``lists.parts_from_rows``): a campaign's one-document-a-recipient
    list of the earlier layout becomes parts, runs of consecutive numbers. Each recipient keeps
    its id, so links that went out before still unsubscribe and redirect, and the rest of the
    campaign is sent under the same ids; the states count as before. A part written by a run
    killed before it deleted the rows is written again, not twice; a second run moves nothing."""
    system, viewer, cid = world
    db, oid = system.mongo.db, ObjectId(cid)
    now = datetime.now(UTC)
    rows = [
        {
            "_id": ObjectId(),
            "campaign_id": oid,
            "seq": seq,
            "email": f"Old{k}@example.test",
            "key": f"old{k}@example.test",
            "variables": {"n": k},
            "state": "pending",
            "created_at": now,
        }
        for k, seq in enumerate([0, 1, 2, 3, 4, 5, 8, 9, 10, 11])  # 6 and 7: an add's gap
    ]
    rows[0]["state"] = "queued"
    rows[2]["state"] = "suppressed"
    rows[3].update(state="failed", error="no subject")
    rows[4].update(state="suppressed", unsubscribed_at=now, unsubscribed_via="one-click")
    rows[5].update(state="queued", links=["https://shop.test/a"])
    await db.campaign_recipients.insert_many(rows)
    await db.campaigns.update_one(
        {"_id": oid},
        {
            "$set": {
                "status": "paused",
                "recipients": 10,
                "next_seq": 12,
                "pending_floor": 6,  # rows 1 (stored pending) and 0, 5 were queued
                "track_clicks": True,
            }
        },
    )
    campaign = await _campaign(system, cid)
    await db.campaign_lists.insert_one(lists.legacy_part(campaign, rows[:6]))  # killed here
    # (every start-up runs it: build_system did, on the empty database)
    assert await db.schema_migrations.find_one({"_id": "campaign-lists"})

    assert await lists.parts_from_rows(db) == 10
    assert await db.campaign_recipients.count_documents({}) == 0
    parts = await db.campaign_lists.find({"campaign_id": oid}).sort("seq", 1).to_list()
    assert [(p["seq"], p["end"]) for p in parts] == [(0, 6), (8, 12)]
    stored = await _recipients(system, cid)
    assert [r.id for r in stored] == [r["_id"] for r in rows]
    assert [r.seq for r in stored] == [r["seq"] for r in rows]
    assert await recipient_states(system.mongo, oid) == (
        {"queued": 3, "suppressed": 2, "failed": 1, "pending": 4},
        1,
    )
    # the links that went out with the old ids still work
    secret = system.settings.secret_key.get_secret_value().encode()
    click = click_token(secret, rows[5]["_id"], 0)
    assert await system.tracking.click(click, method="GET", user_agent="Mail") == (
        "https://shop.test/a"
    )
    await system.tracking.unsubscribe(unsubscribe_token(secret, rows[8]["_id"]))
    assert (await recipient_states(system.mongo, oid))[1] == 2
    assert await lists.parts_from_rows(db) == 0

    await system.campaigns.transition(viewer, cid, "resume")
    assert await _batch(system, cid) == {"ran": True, "queued": 3, "suppressed": 1, "failed": 0}
    queued = {r["_id"] for r in await campaign_messages(db, oid)}
    assert queued == {rows[k]["_id"] for k in (6, 7, 9)}
    assert (await _batch(system, cid)).get("completed")


async def test_a_batch_asks_for_hosted_users_only_at_hosted_domains(world, commands):
    """Which of a batch's recipients are hosted here is read for the addresses at a hosted
    domain only (every identity is at one): a batch to remote domains reads no identities,
    and a hosted recipient in a batch still gets the mailbox copy."""
    system, viewer, cid = world
    await system.campaigns.add_recipients(viewer, cid, _rows(0, 5))  # example.test: remote
    await system.campaigns.transition(viewer, cid, "start")
    commands.clear()
    assert (await _batch(system, cid))["queued"] == 5
    assert [c for c in commands.commands if c.collection == "identities"] == []

    reader = await system.accounts.create_user(f"reader@{DOMAIN}", "correct horse battery")
    other = await create_campaign(system, viewer, "mixed", "news")
    rows = [*_rows(10, 3), (f"Reader@{DOMAIN}", {"n": 7})]
    await system.campaigns.add_recipients(viewer, str(other["_id"]), rows)
    await system.campaigns.transition(viewer, str(other["_id"]), "start")
    commands.clear()
    assert (await _batch(system, str(other["_id"])))["queued"] == 4
    assert len([c for c in commands.commands if c.collection == "identities"]) == 1
    copy_ = await system.mongo.db.messages.find_one({"campaign_id": other["_id"]})
    assert copy_ is not None and b"Number 7." in (await system.blobs.get(copy_["raw_blob_id"]))
    item = await system.mongo.db.mailbox_items.find_one({"user_id": reader["_id"]})
    assert item is not None and item["message_id"] == copy_["_id"]
