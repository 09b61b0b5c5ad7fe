"""Pure campaign rules (issue 15): lists, CSV, pacing, warm-up, tokens, tracking, domain checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from app.domain import campaign_tokens as tokens
from app.domain.campaigns import (
    batch_plan,
    check_recipients,
    next_day_start,
    next_status,
    parse_recipient_csv,
    warmup_allowance,
    warmup_limit,
)
from app.domain.domain_checks import (
    MISSING,
    OK,
    WRONG,
    check_dkim,
    check_dmarc,
    check_mx,
    check_spf,
    verified,
)
from app.domain.errors import ValidationError
from app.domain.tracking import (
    Hit,
    add_pixel,
    machine_click,
    machine_open,
    rewrite_links,
)

SECRET = b"s3cret"
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


# --- recipient lists -------------------------------------------------------------------------


def test_duplicates_and_invalid_addresses_are_reported_not_kept() -> None:
    checked = check_recipients(
        [
            ("Bob@Example.test", {"name": "Bob"}),
            ("bob@example.test", {"name": "again"}),
            ("not an address", None),
            ("carol@example.test", None),
            ("dave@example.test", ["not", "an", "object"]),
        ],
        already={"carol@example.test"},
    )
    assert [(r.email, r.key, r.variables) for r in checked.accepted] == [
        ("Bob@example.test", "bob@example.test", {"name": "Bob"})
    ]
    assert checked.duplicates == ["bob@example.test", "carol@example.test"]
    assert [e for e, _ in checked.invalid] == ["not an address", "dave@example.test"]


def test_csv_email_column_and_variable_columns() -> None:
    rows = parse_recipient_csv(
        '\ufeffName,EMAIL,city\nBob,bob@x.test,Paris\n,carol@x.test,\n\n"D, Jr",dave@x.test,Rome\n'
    )
    assert rows == [
        ("bob@x.test", {"Name": "Bob", "city": "Paris"}),
        ("carol@x.test", {}),
        ("dave@x.test", {"Name": "D, Jr", "city": "Rome"}),
    ]


@pytest.mark.parametrize("text", ["", "name,city\nBob,Paris\n"])
def test_csv_without_an_email_column_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_recipient_csv(text)
    assert e.value.fields[0].field == "file"


def test_status_transitions() -> None:
    assert next_status("start", "draft") == "sending"
    assert next_status("pause", "sending") == "paused"
    assert next_status("resume", "paused") == "sending"
    assert next_status("cancel", "paused") == "canceled"
    for action, status in [("start", "sending"), ("resume", "sending"), ("cancel", "completed")]:
        with pytest.raises(ValidationError):
            next_status(action, status)


# --- pacing and warm-up ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 7, 59, 60, 61, 600, 1000, 6000, 29_999, 30_000, 100_000])
def test_batch_plan_paces_at_the_rate(rate: int) -> None:
    plan = batch_plan(rate, max_batch=500)
    assert 1 <= plan.size <= 500
    assert plan.per_minute() == pytest.approx(rate, rel=1e-9)
    # batches at least a second apart until a batch is full
    assert plan.interval_seconds >= 1.0 or plan.size == 500


def test_batch_plan_without_a_rate_is_full_batches_back_to_back() -> None:
    plan = batch_plan(None, max_batch=300)
    assert (plan.size, plan.interval_seconds) == (300, 0.0)


def test_warmup_ramp_day_by_day_then_unlimited() -> None:
    ramp = [1000, 2000, 5000]
    assert warmup_limit(ramp, 0) == 1000
    assert warmup_limit(ramp, 2) == 5000
    assert warmup_limit(ramp, 3) is None
    assert warmup_limit([], 0) is None
    assert warmup_allowance(ramp, 0, 400) == 600
    assert warmup_allowance(ramp, 0, 1000) == 0
    assert warmup_allowance(ramp, 0, 1500) == 0
    assert warmup_allowance(ramp, 5, 10**9) is None
    assert next_day_start(datetime(2026, 12, 4, 23, 59, tzinfo=UTC)) == datetime(
        2026, 12, 5, tzinfo=UTC
    )


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_round_trip_and_refuse_forgeries() -> None:
    rid = ObjectId()
    u = tokens.unsubscribe_token(SECRET, rid)
    assert tokens.parse_unsubscribe_token(SECRET, u) == rid
    assert tokens.parse_unsubscribe_token(SECRET, u.upper()) == rid  # case-folded by an MTA
    assert tokens.parse_unsubscribe_token(b"other", u) is None
    for i in (0, len(u) // 2, len(u) - 1):  # any character changed, padding bits included
        for c in "ab":
            if u[i] != c:
                assert tokens.parse_unsubscribe_token(SECRET, u[:i] + c + u[i + 1 :]) is None
    assert tokens.parse_unsubscribe_token(SECRET, "../../etc") is None
    # kinds do not mix
    o = tokens.open_token(SECRET, rid)
    assert tokens.parse_open_token(SECRET, o) == rid
    assert tokens.parse_unsubscribe_token(SECRET, o) is None
    c = tokens.click_token(SECRET, rid, 3)
    assert tokens.parse_click_token(SECRET, c) == (rid, 3)
    assert tokens.parse_open_token(SECRET, c) is None


def test_unsubscribe_address_is_a_short_enough_local_part() -> None:
    rid = ObjectId()
    address = tokens.unsubscribe_address(SECRET, rid, "example.test")
    assert len(address.partition("@")[0]) <= 64  # RFC 5321 §4.5.3.1.1
    assert tokens.parse_unsubscribe_address(SECRET, address.upper()) == rid
    assert tokens.parse_unsubscribe_address(SECRET, "alice@example.test") is None
    assert tokens.parse_unsubscribe_address(SECRET, "unsubscribe+abc@example.test") is None


def test_a_campaign_message_id_names_its_recipient_row() -> None:
    rid, cid = ObjectId(), ObjectId()
    mid = tokens.campaign_message_id(rid, cid, "mx.example.test")
    assert mid == f"<{rid}.{cid}@mx.example.test>"
    assert tokens.campaign_row_id(mid) == rid
    assert tokens.campaign_row_id(f" {mid[1:-1]} ") == rid  # as a report may quote it
    assert tokens.campaign_row_id(f"<{rid}@mx.example.test>") is None  # not campaign mail
    assert tokens.campaign_row_id("<hello@example.test>") is None
    assert tokens.campaign_row_id(f"<{rid}.{cid}>") is None


# --- tracking --------------------------------------------------------------------------------


def test_links_rewritten_with_their_index_and_the_pixel_added() -> None:
    html = (
        "<p><a href=\"https://shop.test/a?x=1&amp;y=2\">A</a> <a class=b href='http://b.test/'>B"
        '</a> <a href="mailto:x@y.test">mail</a> <a href="#top">top</a>'
        ' <a href="https://shop.test/a?x=1&amp;y=2">A again</a></p></body>'
    )
    tracked = rewrite_links(html, lambda i: f"https://t.test/c/{i}")
    assert tracked.links == ["https://shop.test/a?x=1&y=2", "http://b.test/"]
    assert tracked.html.count("https://t.test/c/0") == 2
    assert "href='https://t.test/c/1'" in tracked.html
    assert "mailto:x@y.test" in tracked.html and 'href="#top"' in tracked.html
    pixel = add_pixel(tracked.html, "https://t.test/o/x")
    assert pixel.endswith(
        '<img src="https://t.test/o/x" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px"></body>'
    )


BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def test_machine_opens() -> None:
    delivered = T0
    human = Hit("GET", BROWSER, T0 + timedelta(seconds=2), delivered)
    assert machine_open(human) is None
    assert machine_open(Hit("HEAD", BROWSER, T0 + timedelta(hours=1), delivered)) == (
        "head_request"
    )
    google = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert machine_open(Hit("GET", google, T0 + timedelta(hours=5), delivered)) == "known_agent"
    # Apple MPP: the bare "Mozilla/5.0" right after delivery
    apple = Hit("GET", "Mozilla/5.0", T0 + timedelta(seconds=3), delivered)
    assert machine_open(apple) == "proxy_prefetch"
    assert machine_open(Hit("GET", "Mozilla/5.0", T0 + timedelta(minutes=5), delivered)) is None
    assert machine_open(Hit("GET", "", T0 + timedelta(seconds=1), delivered)) == "proxy_prefetch"
    assert machine_open(Hit("GET", "", T0 + timedelta(seconds=1), None)) is None


def test_machine_clicks() -> None:
    at = T0 + timedelta(minutes=10)
    hit = Hit("GET", BROWSER, at, None)
    assert machine_click(hit, 0, []) is None
    # the same link twice is a person double-clicking
    assert machine_click(hit, 0, [(at - timedelta(milliseconds=300), 0)]) is None
    # a different link within the second: a scanner clicking everything
    assert machine_click(hit, 1, [(at - timedelta(milliseconds=300), 0)]) == "click_burst"
    assert machine_click(hit, 1, [(at - timedelta(seconds=5), 0)]) is None
    scanner = Hit("GET", "Mozilla/5.0 (compatible; Barracuda Sentinel)", at, None)
    assert machine_click(scanner, 0, []) == "known_agent"
    assert machine_click(Hit("HEAD", BROWSER, at, None), 0, []) == "head_request"


# --- domain checks ---------------------------------------------------------------------------

HOST = "mx.mailhub.test"
SPF = f"v=spf1 mx a:{HOST} -all"
DKIM = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAour"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"


def test_spf() -> None:
    assert check_spf("example.test", HOST, [SPF, "google-site=x"], SPF).status == OK
    assert check_spf("example.test", HOST, [f"v=spf1 include:{HOST} ~all"], SPF).status == OK
    assert check_spf("example.test", HOST, ["google-site=x"], SPF).status == MISSING
    wrong = check_spf("example.test", HOST, ["v=spf1 a:other.test -all"], SPF)
    assert (wrong.status, wrong.expected) == (WRONG, SPF)
    assert check_spf("example.test", HOST, [SPF, SPF], SPF).status == WRONG


def test_dkim() -> None:
    name = "mh._domainkey.example.test"
    split = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0B AQEFAAOCAQ8AMIIBCgKCAQEAour"
    assert check_dkim(name, [split], DKIM).status == OK
    assert check_dkim(name, [], DKIM).status == MISSING
    assert check_dkim(name, ["v=DKIM1; k=rsa; p=MIIBsomeoneelse"], DKIM).status == WRONG


def test_dmarc_and_mx() -> None:
    ok = check_dmarc("_dmarc.example.test", [DMARC], DMARC)
    assert (ok.status, ok.detail) == (OK, "p=quarantine")
    assert check_dmarc("_dmarc.example.test", [], DMARC).status == MISSING
    assert check_dmarc("_dmarc.example.test", ["v=DMARC1; p=maybe"], DMARC).status == WRONG
    assert check_mx("example.test", HOST, [HOST], f"10 {HOST}.").status == OK
    assert check_mx("example.test", HOST, ["mx.other.test"], f"10 {HOST}.").status == WRONG
    assert check_mx("example.test", HOST, [], f"10 {HOST}.").status == MISSING


def test_verified_needs_spf_dkim_and_dmarc() -> None:
    checks = [
        check_spf("example.test", HOST, [SPF], SPF),
        check_dkim("mh._domainkey.example.test", [DKIM], DKIM),
        check_dmarc("_dmarc.example.test", [DMARC], DMARC),
        check_mx("example.test", HOST, [], f"10 {HOST}."),
    ]
    assert verified(checks)  # MX only matters for receiving
    assert not verified(checks[:2] + [check_dmarc("_dmarc.example.test", [], DMARC)])
