"""A corpus of a few thousand generated messages: every operator returns exactly the items a
brute-force filter over the same MongoDB documents returns (and nothing of other users)."""

from __future__ import annotations

import random
import re
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.bootstrap import build_system
from app.config import Settings
from app.domain.viewer import Viewer
from tests.support.cleanup import drop_database

OWNER_ITEMS, OTHER_ITEMS = 2200, 400
PEOPLE = [
    ("Dana Scully", "dana.scully@fbi.example"),
    ("Fox Mulder", "fox@fbi.example"),
    ("Walter Skinner", "skinner@fbi.example"),
    ("Ada Lovelace", "ada@engine.example.org"),
    ("Grace Hopper", "grace@navy.example"),
    ("Linus", "linus@kernel.example"),
    ("Zoë Ångström", "zoe@uni.example"),
    ("", "noreply@shop.example"),
    ("Bob Builder", "bob@example.test"),
    ("Carol Danvers", "carol@example.test"),
]
WORDS = (
    "invoice receipt budget meeting quarterly report lunch travel flight hotel project plan "
    "deadline review draft contract payment order shipping update team schedule café résumé "
    "weekend photos family dinner agenda minutes release notes security password reset"
).split()
LABELS = ["Work", "Travel", "Receipts", "Family & Friends", "x`y", "日本"]
FILES = ["report.pdf", "IMG_1234.jpg", "budget-2024.xlsx", "notes.txt", "Contract Final.PDF"]
FOLDERS = ["INBOX"] * 6 + ["ARCHIVE", "ARCHIVE", "TRASH", "SPAM"]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(
    rng: random.Random, owner: ObjectId, me: tuple[str, str], now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    role = rng.choices(["received", "sent", "draft"], [8, 3, 1])[0]
    person = lambda p: {"name": p[0] or None, "email": p[1]}  # noqa: E731
    others = rng.sample(PEOPLE, 4)
    sender = person(me) if role != "received" else person(others[0])
    to = [person(others[1])] if role != "received" else [person(me)]
    cc = [person(others[2])] if rng.random() < 0.3 else []
    bcc = [person(others[3])] if role != "received" and rng.random() < 0.4 else []
    subject = _sentence(rng, rng.randint(1, 4)).capitalize()
    body = f"{_sentence(rng, rng.randint(3, 25))}. {rng.choice(['Thanks', 'Regards', 'Cheers'])}"
    files = rng.sample(FILES, rng.choice([0, 0, 0, 1, 2]))
    folder = {"sent": "SENT", "draft": "DRAFTS"}.get(role) or rng.choice(FOLDERS)
    if role == "sent" and rng.random() < 0.2:
        folder = rng.choice(["ARCHIVE", "TRASH"])
    message_id = ObjectId()
    size = rng.choice(
        [rng.randint(500, 9000), rng.randint(10_000, 900_000), rng.randint(1, 6) * 1048576]
    )
    message = {
        "_id": message_id,
        "from": sender,
        "to": to,
        "cc": cc,
        "bcc": bcc,
        "subject": subject,
        "text_body": body,
        "html_body": None,
        "attachments": [
            {
                "id": ObjectId(),
                "filename": f,
                "content_type": "application/octet-stream",
                "size": 10,
                "sha256": "0",
                "blob_id": None,
            }
            for f in files
        ],
        "has_attachments": bool(files),
        "size": size,
        "status": "stored",
        "created_at": now,
    }
    item = {
        "_id": ObjectId(),
        "user_id": owner,
        "message_id": message_id,
        "role": role,
        "thread_id": ObjectId(),
        "folder": folder,
        "labels": rng.sample(LABELS, rng.choice([0, 0, 1, 1, 2])),
        "read": role != "received" or rng.random() < 0.6,
        "starred": rng.random() < 0.15,
        "received_at": now - timedelta(seconds=rng.randint(60, 3 * 365 * 86400)),
        "version": 1,
        "from": sender,
        "to": to,
        "cc": cc,
        "subject": subject,
        "snippet": body[:100],
        "has_attachments": bool(files),
        "size": size,
    }
    return item, message


class Corpus:
    def __init__(self, system: Any, owner: Viewer, rows: list[dict[str, Any]]) -> None:
        self.system, self.owner, self.rows = system, owner, rows


@pytest.fixture(scope="module")
async def corpus(services):  # type: ignore[no-untyped-def]
    name = "t" + uuid.uuid4().hex[:12]
    settings = Settings(
        mongodb_uri=services.mongodb,
        mongodb_database=name,
        redis_url=services.redis,
        redis_prefix=name,
        typesense_url=services.typesense,
        typesense_api_key=services.typesense_api_key,
        typesense_collection=f"{name}_items",
        secret_key="test-secret-key-0123456789abcdef",
        environment="test",
        _env_file=None,
    )
    system = await build_system(settings)
    rng, now = random.Random(20250301), datetime.now(UTC)
    me, other = ObjectId(), ObjectId()
    rows = [
        generate(rng, me, ("Alice Example", "alice@example.test"), now) for _ in range(OWNER_ITEMS)
    ]
    rows += [
        generate(rng, other, ("Mallory", "mallory@example.test"), now) for _ in range(OTHER_ITEMS)
    ]
    db = system.mongo.db
    await db.messages.insert_many([m for _, m in rows])
    await db.mailbox_items.insert_many([i for i, _ in rows])
    ids = [i["_id"] for i, _ in rows]
    for start in range(0, len(ids), 500):
        await system.search.indexer.index_items(ids[start : start + 500])
    views = [{**i, "message": m} for i, m in rows if i["user_id"] == me]
    yield Corpus(system, Viewer(me, "alice@example.test", "Alice Example", None), views)
    await system.search.index.drop_all()
    await drop_database(system.mongo.client, name)
    await system.close()


# --- the brute force: plain Python over the stored documents ------------------------------


def toks(text: str | None) -> list[str]:
    text = "".join(
        c for c in unicodedata.normalize("NFKD", text or "") if not unicodedata.combining(c)
    )
    return re.findall(r"[^\W_]+", text.casefold())


def people(row: dict[str, Any], field: str) -> list[dict[str, Any]]:
    if field == "from":
        return [row["message"]["from"]]
    if field == "bcc" and row["role"] == "received":
        return []  # a recipient never sees the Bcc
    return list(row["message"][field] or [])


def texts(row: dict[str, Any]) -> list[str]:
    addrs = [p for f in ("from", "to", "cc", "bcc") for p in people(row, f)]
    return (
        [row["subject"], row["message"]["text_body"]]
        + [a["filename"] for a in row["message"]["attachments"]]
        + [f"{p['name'] or ''} {p['email']}" for p in addrs]
    )


def word(w: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: all(any(t in toks(x) for x in texts(r)) for t in toks(w))


def phrase(p: str) -> Callable[[dict[str, Any]], bool]:
    wanted = " ".join(toks(p))
    return lambda r: any(f" {wanted} " in f" {' '.join(toks(x))} " for x in texts(r))


def addr(field: str, value: str) -> Callable[[dict[str, Any]], bool]:
    value = value.casefold()

    def match(p: dict[str, Any]) -> bool:
        email = p["email"].casefold()
        local, _, domain = email.partition("@")
        name = " ".join(toks(p["name"]))
        return (
            value in (email, local, domain, name)
            or domain.endswith("." + value)
            or value in (toks(p["name"]) + toks(email))
        )

    return lambda r: any(match(p) for p in people(r, field))


def days_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def has_label(label: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: label.casefold() in [x.casefold() for x in r["labels"]]


def files(value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: any(
        value.casefold() in [f.casefold(), f.rsplit(".", 1)[-1].casefold(), *toks(f)]
        for f in (a["filename"] for a in r["message"]["attachments"])
    )


K, M = 1024, 1024 * 1024
CASES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("invoice", word("invoice")),
    ("Budget MEETING", lambda r: word("budget")(r) and word("meeting")(r)),
    ('"quarterly report"', phrase("quarterly report")),
    ("cafe", word("café")),
    ("resume", word("résumé")),
    ("zoe", word("zoë")),
    ("from:dana", addr("from", "dana")),
    ("from:scully", addr("from", "scully")),
    ("from:fbi.example", addr("from", "fbi.example")),
    ('from:"Dana Scully"', addr("from", "dana scully")),
    ("from:dana.scully@fbi.example", addr("from", "dana.scully@fbi.example")),
    ("from:ångström", addr("from", "angstrom")),
    ("to:bob@example.test", addr("to", "bob@example.test")),
    ("to:alice", addr("to", "alice")),
    ("cc:carol", addr("cc", "carol")),
    ("bcc:grace", addr("bcc", "grace")),
    ("subject:lunch", lambda r: "lunch" in toks(r["subject"])),
    ('subject:"project plan"', lambda r: {"project", "plan"} <= set(toks(r["subject"]))),
    ("label:work", has_label("work")),
    ('label:"family & friends"', has_label("Family & Friends")),
    ("label:x`y", has_label("x`y")),
    ("label:日本", has_label("日本")),
    ("in:inbox", lambda r: r["folder"] == "INBOX"),
    ("in:archive", lambda r: r["folder"] == "ARCHIVE"),
    ("in:sent", lambda r: r["folder"] == "SENT"),
    ("in:drafts", lambda r: r["folder"] == "DRAFTS"),
    ("in:trash", lambda r: r["folder"] == "TRASH"),
    ("in:spam invoice", lambda r: r["folder"] == "SPAM" and word("invoice")(r)),
    ("in:anywhere receipt", word("receipt")),
    ("in:travel", has_label("travel")),
    ("is:unread", lambda r: not r["read"]),
    ("is:read", lambda r: r["read"]),
    ("is:starred", lambda r: r["starred"]),
    ("has:attachment", lambda r: r["has_attachments"]),
    ("filename:pdf", files("pdf")),
    ("filename:report.pdf", files("report.pdf")),
    ("filename:budget", files("budget")),
    ('filename:"contract final.pdf"', files("contract final.pdf")),
    ("before:2024/01/01", lambda r: r["received_at"] < day(2024, 1, 1)),
    ("after:2024/06/01", lambda r: r["received_at"] >= day(2024, 6, 1)),
    (
        "after:2023/01/01 before:2023/03/01",
        lambda r: day(2023, 1, 1) <= r["received_at"] < day(2023, 3, 1),
    ),
    ("older_than:1y", lambda r: r["received_at"] < days_ago(365)),
    ("newer_than:30d", lambda r: r["received_at"] >= days_ago(30)),
    ("newer_than:2m", lambda r: r["received_at"] >= days_ago(60)),
    ("larger:1M", lambda r: r["size"] > M),
    ("smaller:10K", lambda r: r["size"] < 10 * K),
    ("larger:500K smaller:2M", lambda r: 500 * K < r["size"] < 2 * M),
    ("-invoice", lambda r: not word("invoice")(r)),
    ("-from:dana", lambda r: not addr("from", "dana")(r)),
    ("-label:work is:starred", lambda r: not has_label("work")(r) and r["starred"]),
    ("invoice OR receipt", lambda r: word("invoice")(r) or word("receipt")(r)),
    ("from:dana OR from:fox", lambda r: addr("from", "dana")(r) or addr("from", "fox")(r)),
    (
        "(invoice OR receipt) has:attachment",
        lambda r: (word("invoice")(r) or word("receipt")(r)) and r["has_attachments"],
    ),
    ("-(is:unread OR is:starred)", lambda r: r["read"] and not r["starred"]),
    (
        "(from:dana -label:work) OR (subject:lunch is:starred)",
        lambda r: (
            (addr("from", "dana")(r) and not has_label("work")(r))
            or ("lunch" in toks(r["subject"]) and r["starred"])
        ),
    ),
    (
        'invoice -"quarterly report"',
        lambda r: word("invoice")(r) and not phrase("quarterly report")(r),
    ),
    ("-(budget meeting)", lambda r: not (word("budget")(r) and word("meeting")(r))),
    ("travel -in:inbox", lambda r: word("travel")(r) and r["folder"] != "INBOX"),
    ("foo-invoice", lambda r: False),
]


async def search_all(corpus: Corpus, query: str) -> list[ObjectId]:
    out, after = [], None
    while True:
        page = await corpus.system.search.search(corpus.owner, query, first=100, after=after)
        out += [h.item["_id"] for h in page.hits]
        if not page.has_next:
            return out
        after = page.end_cursor


@pytest.mark.parametrize(("query", "predicate"), CASES, ids=[q for q, _ in CASES])
async def test_operator_returns_exactly_the_brute_force_result(corpus, query, predicate):
    hidden = "in:" not in query  # TRASH and SPAM are left out unless the query names a folder
    expected = {
        r["_id"]
        for r in corpus.rows
        if predicate(r) and not (hidden and r["folder"] in ("TRASH", "SPAM"))
    }
    got = await search_all(corpus, query)
    assert len(got) == len(set(got)), "an item appeared on two pages"
    assert set(got) == expected, (
        f"{len(set(got) - expected)} extra, {len(expected - set(got))} missing"
    )
    order = {r["_id"]: (r["received_at"], r["_id"]) for r in corpus.rows}
    assert got == sorted(got, key=lambda i: order[i], reverse=True)


async def test_corpus_is_realistic_enough_that_every_case_is_meaningful(corpus):
    meaningful = [q for q, p in CASES if 0 < sum(1 for r in corpus.rows if p(r)) < len(corpus.rows)]
    assert len(meaningful) >= len(CASES) - 2  # all but the deliberately empty ones select a subset
