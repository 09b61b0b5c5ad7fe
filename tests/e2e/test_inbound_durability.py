"""Durable before 250: a dead database answers 451; the retried message is stored exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from app.bootstrap import build_system
from app.config import Settings
from app.embedded import _mongo_ready, free_port
from app.mx.server import start_mx
from tests.support.mx import DOMAIN, MailZone, mail_zone, message, running_mx, smtp_send
from tests.support.own_mongo import start_mongo


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> bytes:
    writer.write(line)
    await writer.drain()
    reply = b""
    while True:
        chunk = await asyncio.wait_for(reader.readline(), 30)
        reply += chunk
        if not chunk or chunk[3:4] == b" ":
            return reply


async def test_database_killed_mid_data_gives_451_and_the_retry_is_stored_once(
    services, tmp_path, unique_name, zone
):
    port = free_port()
    mongo = start_mongo(port, tmp_path / "db")
    settings = Settings(
        mongodb_uri=f"mongodb://127.0.0.1:{port}/?directConnection=true",
        mongodb_database=unique_name,
        redis_url=services.redis,
        redis_prefix=unique_name,
        typesense_url=services.typesense,
        typesense_api_key=services.typesense_api_key,
        typesense_collection=f"{unique_name}_items",
        secret_key="k" * 32,
        mongo_timeout_ms=1500,
        smtp_port=0,
        hostname="mx.mailhub.test",
        dns_servers=[zone.address],
        _env_file=None,
    )
    system = await build_system(settings)
    mx = None
    try:
        await system.accounts.add_domain(DOMAIN)
        user = await system.accounts.create_user(f"bob@{DOMAIN}", "long password")
        mx = await start_mx(settings, system)
        raw = message(subject="Survives an outage", message_id="<outage-1@pass.test>")

        reader, writer = await asyncio.open_connection("127.0.0.1", mx.port)
        await reader.readline()
        assert (await _command(reader, writer, b"EHLO client.pass.test\r\n")).startswith(b"250")
        assert (await _command(reader, writer, b"MAIL FROM:<alice@pass.test>\r\n")).startswith(
            b"250"
        )
        assert (await _command(reader, writer, f"RCPT TO:<bob@{DOMAIN}>\r\n".encode())).startswith(
            b"250"
        )
        assert (await _command(reader, writer, b"DATA\r\n")).startswith(b"354")
        writer.write(raw)
        await writer.drain()
        mongo.kill()  # mid-DATA: the body is in, the final dot is not
        mongo.wait()
        started = time.monotonic()
        reply = await _command(reader, writer, b".\r\n")
        assert reply.startswith(b"451 4.3.0"), reply
        assert time.monotonic() - started < 15
        writer.close()

        mongo = start_mongo(port, tmp_path / "db")
        for _ in range(300):
            if _mongo_ready(settings.mongodb_uri):
                break
            await asyncio.sleep(0.1)
        first = await smtp_send(mx.port, raw)
        assert first["data"][0] == 250, first
        # the sender never saw that 250 (a lost reply) and sends again: still one copy
        again = await smtp_send(mx.port, raw)
        assert again["data"][0] == 250, again
        db = system.mongo.db
        assert await db.mailbox_items.count_documents({"user_id": user["_id"]}) == 1
        assert await db.messages.count_documents({}) == 1
        assert await db["blobs.files"].count_documents({"metadata.kind": "raw"}) == 1
        counter = await db.mailbox_counters.find_one({"user_id": user["_id"], "name": "INBOX"})
        assert (counter["total"], counter["unread"]) == (1, 1)
    finally:
        if mx is not None:
            await mx.stop(grace=1)
        await system.close()
        mongo.kill()
        mongo.wait()


async def test_concurrent_senders_are_group_committed_and_all_stored(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        _, carol = await h.user("carol")
        raws = [
            message(subject=f"burst {n}", message_id=f"<burst-{n}@pass.test>") for n in range(30)
        ]
        replies = await asyncio.gather(
            *(smtp_send(h.port, r, rcpts=[f"bob@{DOMAIN}", f"carol@{DOMAIN}"]) for r in raws)
        )
        assert all(r["data"][0] == 250 for r in replies), replies
        bob_items, carol_items = await h.items(bob), await h.items(carol)
        threads = await h.system.mongo.db.threads.count_documents({"user_id": bob})
    assert sorted(i["subject"] for i in bob_items) == sorted(f"burst {n}" for n in range(30))
    assert len(carol_items) == 30
    assert threads == 30  # different subjects, no references: one conversation each


async def test_a_reply_joins_the_thread_of_its_parent(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        parent = message(subject="Plans", message_id="<plans-1@pass.test>")
        reply = message(subject="Re: Plans", message_id="<plans-2@pass.test>").replace(
            b"Message-ID:",
            b"In-Reply-To: <plans-1@pass.test>\r\nReferences: <plans-1@pass.test>\r\nMessage-ID:",
        )
        assert (await smtp_send(h.port, parent))["data"][0] == 250
        assert (await smtp_send(h.port, reply))["data"][0] == 250
        items = await h.items(bob)
        thread = await h.system.mongo.db.threads.find_one({"_id": items[0]["thread_id"]})
    assert items[0]["thread_id"] == items[1]["thread_id"]
    assert (thread["message_count"], thread["unread_count"]) == (2, 2)
