"""DMARC (RFC 7489): record parsing, alignment, evaluation, Authentication-Results."""

from __future__ import annotations

import pytest

from app.domain.dmarc import (
    DmarcRecord,
    DmarcResult,
    aligned,
    authentication_results_header,
    evaluate_dmarc,
    organizational_domain,
    parse_dmarc_record,
    select_dmarc_record,
)
from app.domain.errors import ValidationError

# ------------------------------------------------------------------ records


@pytest.mark.parametrize(
    ("txt", "expected"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject", None, "r", "r", 100, ())),
        (
            "v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; pct=25; "
            "rua=mailto:d@example.com,mailto:e@example.net!10m; ruf=mailto:f@example.com; fo=1",
            DmarcRecord(
                "quarantine", "reject", "s", "s", 25,
                ("mailto:d@example.com", "mailto:e@example.net!10m"),
            ),
        ),
        ("V=dmarc1;P=Reject;ADKIM=S", DmarcRecord("reject", None, "s", "r", 100, ())),
        ("v=DMARC1;p=none;", DmarcRecord("none", None, "r", "r", 100, ())),
        ("  v = DMARC1 ;  p = none ; ;", DmarcRecord("none", None, "r", "r", 100, ())),
        ("v=DMARC1; p=reject; adkim=x; aspf=1; pct=150",
         DmarcRecord("reject", None, "r", "r", 100, ())),
        ("v=DMARC1; p=reject; pct=abc", DmarcRecord("reject", None, "r", "r", 100, ())),
        ("v=DMARC1; p=reject; pct=0", DmarcRecord("reject", None, "r", "r", 0, ())),
        ("v=DMARC1; p=reject; foo=bar; np=none", DmarcRecord("reject", None, "r", "r", 100, ())),
        # §6.6.3: invalid p (or sp) with a usable rua → treat as p=none.
        ("v=DMARC1; p=bogus; rua=mailto:d@example.com",
         DmarcRecord("none", None, "r", "r", 100, ("mailto:d@example.com",))),
        ("v=DMARC1; rua=mailto:d@example.com",
         DmarcRecord("none", None, "r", "r", 100, ("mailto:d@example.com",))),
        ("v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.com",
         DmarcRecord("none", None, "r", "r", 100, ("mailto:d@example.com",))),
        # ... and without one, the record is discarded.
        ("v=DMARC1; p=bogus", None),
        ("v=DMARC1", None),
        ("v=DMARC1; p=reject; sp=bogus", None),
        ("v=DMARC1; p=bogus; rua=not a uri", None),
        ("p=reject; v=DMARC1", None),
        ("v=spf1 include:_spf.example.com ~all", None),
        ("v=DMARC2; p=reject", None),
        ("", None),
    ],
)  # fmt: skip
def test_parse_dmarc_record(txt, expected):
    assert parse_dmarc_record(txt) == expected


def test_select_ignores_other_txt_records():
    record = select_dmarc_record(["some-verification=abc", "v=DMARC1; p=reject"])
    assert record is not None and record.p == "reject"


def test_select_with_multiple_dmarc_records_applies_none():
    assert select_dmarc_record(["v=DMARC1; p=reject", "v=DMARC1; p=none"]) is None
    assert select_dmarc_record([]) is None


# ------------------------------------------------------------------ alignment


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("mail.example.com", "example.com"),
        ("a.b.c.example.com", "example.com"),
        ("Mail.Example.COM.", "example.com"),
        ("example.co.uk", "example.co.uk"),
        ("news.example.co.uk", "example.co.uk"),
        ("shop.example.com.au", "example.com.au"),
        ("x.y.example.co.jp", "example.co.jp"),
        ("co.uk", "co.uk"),
        ("localhost", "localhost"),
        ("example.uk", "example.uk"),
    ],
)
def test_organizational_domain(domain, org):
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "author", "mode", "expected"),
    [
        ("example.com", "example.com", "s", True),
        ("EXAMPLE.com.", "example.com", "s", True),
        ("mail.example.com", "example.com", "s", False),
        ("mail.example.com", "example.com", "r", True),
        ("example.com", "news.example.com", "r", True),
        ("a.example.com", "b.example.com", "r", True),
        ("example.net", "example.com", "r", False),
        ("evil-example.com", "example.com", "r", False),
        ("one.co.uk", "two.co.uk", "r", False),  # different registrations under co.uk
        ("mail.one.co.uk", "one.co.uk", "r", True),
        ("", "example.com", "r", False),
    ],
)
def test_alignment(identifier, author, mode, expected):
    assert aligned(identifier, author, mode) is expected


def test_unknown_alignment_mode_is_rejected():
    with pytest.raises(ValidationError):
        aligned("a.com", "a.com", "x")


# ------------------------------------------------------------------ evaluation

REJECT = DmarcRecord("reject", None, "r", "r", 100, ())
STRICT = DmarcRecord("reject", None, "s", "s", 100, ())
SUB_NONE = DmarcRecord("reject", "none", "r", "r", 100, ())


def evaluate(
    record: DmarcRecord | None = REJECT,
    *,
    from_domain: str = "example.com",
    org: bool = False,
    spf: str = "fail",
    spf_domain: str | None = None,
    dkim: tuple[str, ...] = (),
    lookup_error: str | None = None,
) -> DmarcResult:
    return evaluate_dmarc(
        from_domain=from_domain,
        record=record,
        record_domain_is_org=org,
        spf_result=spf,
        spf_domain=spf_domain,
        dkim_passing_domains=dkim,
        lookup_error=lookup_error,
    )


@pytest.mark.parametrize(
    ("kwargs", "result", "disposition"),
    [
        ({"spf": "pass", "spf_domain": "example.com"}, "pass", "none"),
        ({"spf": "pass", "spf_domain": "bounce.example.com"}, "pass", "none"),
        ({"spf": "pass", "spf_domain": "esp.example.net"}, "fail", "reject"),
        ({"spf": "softfail", "spf_domain": "example.com"}, "fail", "reject"),
        ({"spf": "PASS", "spf_domain": "example.com"}, "pass", "none"),
        ({"dkim": ("example.com",)}, "pass", "none"),
        ({"dkim": ("esp.example.net", "mail.example.com")}, "pass", "none"),
        ({"dkim": ("esp.example.net",)}, "fail", "reject"),
        ({"spf": "pass", "spf_domain": "esp.example.net", "dkim": ("esp.example.net",)},
         "fail", "reject"),
        ({"record": STRICT, "dkim": ("mail.example.com",)}, "fail", "reject"),
        ({"record": STRICT, "spf": "pass", "spf_domain": "bounce.example.com"}, "fail", "reject"),
        ({"record": STRICT, "dkim": ("example.com",)}, "pass", "none"),
        ({"record": DmarcRecord("quarantine", None, "r", "r", 100, ())}, "fail", "quarantine"),
        ({"record": DmarcRecord("none", None, "r", "r", 100, ())}, "fail", "none"),
        # Deterministic pct: any pct > 0 applies; pct=0 steps the policy down one level.
        ({"record": DmarcRecord("reject", None, "r", "r", 10, ())}, "fail", "reject"),
        ({"record": DmarcRecord("reject", None, "r", "r", 0, ())}, "fail", "quarantine"),
        ({"record": DmarcRecord("quarantine", None, "r", "r", 0, ())}, "fail", "none"),
        # An SPF DNS hiccup must not become a reject.
        ({"spf": "temperror", "spf_domain": "example.com"}, "temperror", "none"),
        ({"spf": "temperror", "spf_domain": "other.example.net"}, "fail", "reject"),
        ({"record": None}, "none", "none"),
        ({"lookup_error": "temperror"}, "temperror", "none"),
        ({"lookup_error": "permerror"}, "permerror", "none"),
        ({"from_domain": ""}, "permerror", "none"),
        ({"from_domain": "localhost"}, "permerror", "none"),
    ],
)  # fmt: skip
def test_evaluate_dmarc(kwargs, result, disposition):
    verdict = evaluate(**kwargs)
    assert (verdict.result, verdict.disposition) == (result, disposition), verdict.reason


def test_subdomain_policy_applies_when_the_record_came_from_the_org_domain():
    verdict = evaluate(SUB_NONE, from_domain="news.example.com", org=True)
    assert (verdict.result, verdict.policy, verdict.disposition) == ("fail", "none", "none")


def test_subdomain_without_sp_inherits_p():
    verdict = evaluate(REJECT, from_domain="news.example.com", org=True)
    assert (verdict.policy, verdict.disposition) == ("reject", "reject")


def test_sp_does_not_apply_to_the_org_domain_itself_or_a_record_at_the_subdomain():
    assert evaluate(SUB_NONE, from_domain="example.com", org=True).disposition == "reject"
    assert evaluate(SUB_NONE, from_domain="news.example.com", org=False).disposition == "reject"


def test_passing_result_reports_the_policy_and_reason():
    verdict = evaluate(dkim=("Mail.Example.com",), from_domain="Example.COM")
    assert verdict == DmarcResult(
        "pass", "reject", "none", "example.com", "dkim aligned: mail.example.com"
    )


def test_unknown_lookup_error_is_rejected():
    with pytest.raises(ValidationError):
        evaluate(lookup_error="oops")


# ------------------------------------------------------------------ Authentication-Results


def test_authentication_results_example_from_the_design():
    header = authentication_results_header(
        authserv_id="mx.example",
        spf=("pass", "a.com"),
        dkim=[("pass", "a.com", "s1")],
        dmarc=DmarcResult("pass", "reject", "none", "a.com", "dkim aligned: a.com"),
    )
    assert header == (
        "mx.example; spf=pass smtp.mailfrom=a.com; dkim=pass header.d=a.com header.s=s1; "
        "dmarc=pass (p=reject) header.from=a.com"
    )


def test_authentication_results_failures_and_quoting():
    header = authentication_results_header(
        authserv_id="mx.mailhub.example",
        spf=("SoftFail", "bounces+abc@b.example"),
        dkim=[("fail", "b.example", None), ("pass", "esp.example", "sel 1")],
        dmarc=DmarcResult("fail", "quarantine", "quarantine", "b.example", "no aligned"),
    )
    assert header == (
        "mx.mailhub.example; spf=softfail smtp.mailfrom=bounces+abc@b.example; "
        'dkim=fail header.d=b.example; dkim=pass header.d=esp.example header.s="sel 1"; '
        "dmarc=fail (p=quarantine dis=quarantine) header.from=b.example"
    )


def test_authentication_results_without_dkim_or_dmarc_record():
    header = authentication_results_header(
        authserv_id="mx.example",
        spf=("none", None),
        dkim=[],
        dmarc=DmarcResult("none", "none", "none", "c.example", "no DMARC record"),
    )
    assert header == "mx.example; spf=none; dkim=none; dmarc=none header.from=c.example"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"authserv_id": "mx example"},
        {"authserv_id": "mx;x"},
        {"spf": ("maybe", None)},
        {"dkim": [("great", "a.com", None)]},
        {"spf": ("pass", "a.com\r\nX-Injected: 1")},
    ],
)
def test_authentication_results_rejects_bad_input(kwargs):
    args = {
        "authserv_id": "mx.example",
        "spf": ("pass", "a.com"),
        "dkim": [],
        "dmarc": DmarcResult("none", "none", "none", "a.com", ""),
    }
    args.update(kwargs)
    with pytest.raises(ValidationError):
        authentication_results_header(**args)  # type: ignore[arg-type]
