"""Virus scanning with a real clamd (our own EICAR signature database)."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from app.adapters.clamav import ClamdScanner
from app.domain.errors import ServiceUnavailable
from tests.support.clamd import EICAR, SIGNATURE_NAME, ClamdServer
from tests.support.mx import DOMAIN, MailZone, mail_zone, running_mx, smtp_send


@pytest.fixture(scope="module")
def clamd() -> Iterator[ClamdServer]:
    server = ClamdServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


def with_attachment(data: bytes, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@pass.test"
    msg["To"] = f"bob@{DOMAIN}"
    msg["Subject"] = "the file you asked for"
    msg["Message-ID"] = f"<{filename}@pass.test>"
    msg.set_content("attached")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes()


async def test_clamd_finds_eicar_and_passes_clean_data(clamd):
    scanner = ClamdScanner(str(clamd.socket))
    assert await scanner.ping()
    infected = await scanner.scan(b"some prefix " + EICAR + b" and suffix")
    assert (infected.clean, infected.signature) == (False, f"{SIGNATURE_NAME}.UNOFFICIAL")
    assert (await scanner.scan(b"perfectly fine bytes" * 10000)).clean


async def test_unreachable_clamd_is_a_temporary_failure(tmp_path):
    with pytest.raises(ServiceUnavailable):
        await ClamdScanner(str(tmp_path / "missing.sock"), timeout=2).scan(b"x")


async def test_eicar_attachment_is_refused_with_554_and_nothing_is_stored(settings, zone, clamd):
    async with running_mx(settings, zone, clamd=str(clamd.socket)) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(h.port, with_attachment(EICAR, "eicar.com"))
        assert reply["data"][0] == 554 and reply["data"][1].startswith("5.7.1"), reply
        db = h.system.mongo.db
        assert await h.items(bob) == []
        assert await db.messages.count_documents({}) == 0
        assert await db["blobs.files"].count_documents({}) == 0

        clean = await smtp_send(h.port, with_attachment(b"%PDF-1.4 harmless", "report.pdf"))
        assert clean["data"][0] == 250, clean
        stored = await db.attachments.find_one({})
    assert stored["scan_status"] == "clean" and stored["filename"] == "report.pdf"
