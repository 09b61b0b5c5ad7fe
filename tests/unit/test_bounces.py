"""Bounce classification: real-world SMTP replies → class, permanence, suppression."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.domain.bounces import (
    DEFAULT_RULES,
    NO_REPLY,
    BounceClass,
    BounceRule,
    SmtpOutcome,
    classify,
    outcome_from_dsn,
    parse_diagnostic,
    parse_reply,
)
from app.domain.dsn import parse_dsn
from app.domain.errors import ValidationError

REPORTS = Path(__file__).parents[1] / "data" / "reports"

C = BounceClass

# (code, reply text as the server sent it, expected class, permanent, suppress)
# fmt: off
REAL_WORLD_REPLIES = [
    # --- Gmail
    (550, "5.1.1 The email account that you tried to reach does not exist. Please try\n"
          "5.1.1 double-checking the recipient's email address for typos or\n"
          "5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp",
     C.INVALID_MAILBOX, True, True),
    (552, "5.2.2 The email account that you tried to reach is over quota and inactive.",
     C.MAILBOX_FULL, True, False),
    (452, "4.2.2 The email account that you tried to reach is over quota. Please direct\n"
          "4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
     C.MAILBOX_FULL, False, False),
    (550, "5.2.1 The email account that you tried to reach is disabled.",
     C.INVALID_MAILBOX, True, True),
    (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
          "4.2.1 prevents additional messages from being delivered.",
     C.RATE_LIMITED, False, False),
    (421, "4.7.0 [198.51.100.7] Our system has detected an unusual rate of\n"
          "4.7.0 unsolicited mail originating from your IP address. To protect our\n"
          "4.7.0 users from spam, mail sent from your IP address has been temporarily\n"
          "4.7.0 rate limited.",
     C.RATE_LIMITED, False, False),
    (550, "5.7.1 [198.51.100.7] Our system has detected that this message is\n"
          "5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail,\n"
          "5.7.1 this message has been blocked.",
     C.SPAM_BLOCK, True, False),
    (550, "5.7.1 [198.51.100.7] Gmail has detected that this message is likely\n"
          "5.7.1 suspicious due to the very low reputation of the sending IP address.",
     C.REPUTATION_BLOCK, True, False),
    (550, "5.7.26 This mail is unauthenticated, which poses a security risk to the\n"
          "5.7.26 sender and Gmail users, and has been blocked. The sender must\n"
          "5.7.26 authenticate with at least one of SPF or DKIM.",
     C.AUTH_FAILURE, True, False),
    (550, "5.7.26 Unauthenticated email from example.com is not accepted due to\n"
          "5.7.26 domain's DMARC policy.",
     C.AUTH_FAILURE, True, False),
    (421, "4.7.26 This mail has been rate limited because it is unauthenticated.",
     C.AUTH_FAILURE, False, False),
    (552, "5.3.4 Your message exceeded Google's message size limits.",
     C.MESSAGE_TOO_LARGE, True, False),
    (552, "5.7.0 This message was blocked because its content presents a potential\n"
          "5.7.0 security issue.",
     C.CONTENT_REJECTED, True, False),
    (550, "5.7.25 The IP address sending this message does not have a PTR record setup.",
     C.POLICY_BLOCK, True, False),
    (550, "5.4.5 Daily user sending quota exceeded.", C.RATE_LIMITED, False, False),
    # --- Outlook / Exchange Online
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient bob@contoso.com not found by "
          "SMTP address lookup",
     C.INVALID_MAILBOX, True, True),
    (550, "5.5.0 Requested action not taken: mailbox unavailable (S2017) "
          "[AM4PEPF00025F97.eurprd04.prod.outlook.com]",
     C.INVALID_MAILBOX, True, True),
    (550, "5.4.1 Recipient address rejected: Access denied. AS(201806281) "
          "[DB5PEPF00014B8F.eurprd02.prod.outlook.com]",
     C.INVALID_MAILBOX, True, True),
    (550, "5.7.1 Unfortunately, messages from [198.51.100.7] weren't sent. Please contact "
          "your Internet service provider since part of their network is on our block list "
          "(S3150).",
     C.REPUTATION_BLOCK, True, False),
    (550, "5.7.606 Access denied, banned sending IP [198.51.100.7]. To request removal from "
          "this list please visit https://sender.office.com/",
     C.REPUTATION_BLOCK, True, False),
    (451, "4.7.500 Server busy. Please try again later from [198.51.100.7]. (S77714)",
     C.RATE_LIMITED, False, False),
    (550, "5.7.64 TenantAttribution; Relay Access Denied", C.RELAY_DENIED, True, False),
    (550, "5.7.509 Access denied, sending domain example.com does not pass DMARC "
          "verification and has a DMARC policy of reject.",
     C.AUTH_FAILURE, True, False),
    (550, "5.4.310 DNS domain contoso.invalid does not exist", C.INVALID_DOMAIN, True, True),
    (554, "5.4.14 Hop count exceeded - possible mail loop ATTR34", C.NETWORK, True, False),
    (554, "5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
     C.MAILBOX_FULL, True, False),
    (550, "5.7.1 RESOLVER.RST.NotAuthorized; not authorized", C.POLICY_BLOCK, True, False),
    (550, "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
     C.REPUTATION_BLOCK, True, False),
    # --- Yahoo / AOL
    (554, "delivery error: dd This user doesn't have a yahoo.com account "
          "(nobody@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com",
     C.INVALID_MAILBOX, True, True),
    (554, "delivery error: dd Sorry your message to nobody@yahoo.com cannot be delivered. "
          "This mailbox is disabled (554.30). - mta4321.mail.bf1.yahoo.com",
     C.INVALID_MAILBOX, True, True),
    (421, "4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected "
          "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     C.RATE_LIMITED, False, False),
    (553, "5.7.1 [BL21] Connections will not be accepted from 198.51.100.7, because the ip is "
          "in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
     C.REPUTATION_BLOCK, True, False),
    (554, "5.7.9 Message not accepted for policy reasons.  See "
          "https://postmaster.yahooinc.com/error-codes",
     C.POLICY_BLOCK, True, False),
    (550, "5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo "
          "requires all senders to authenticate with either SPF or DKIM.",
     C.AUTH_FAILURE, True, False),
    # --- Postfix / Dovecot / amavis
    (550, "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual "
          "mailbox table",
     C.INVALID_MAILBOX, True, True),
    (450, "4.1.1 <nobody@example.org>: Recipient address rejected: unverified address: "
          "host mail.example.org[192.0.2.1] said: 550 5.1.1 User unknown",
     C.INVALID_MAILBOX, False, False),
    (554, "5.7.1 <someone@elsewhere.example>: Relay access denied", C.RELAY_DENIED, True, False),
    (554, "5.7.1 Service unavailable; Client host [198.51.100.7] blocked using "
          "zen.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.7",
     C.REPUTATION_BLOCK, True, False),
    (552, "5.2.2 <full@example.org> Quota exceeded (mailbox for user is full)",
     C.MAILBOX_FULL, True, False),
    (552, "5.3.4 Message size exceeds fixed limit", C.MESSAGE_TOO_LARGE, True, False),
    (450, "4.7.1 <bob@example.org>: Recipient address rejected: Greylisted, see "
          "http://postgrey.schweikert.ch/help/example.org.html",
     C.RATE_LIMITED, False, False),
    (450, "4.1.2 <bob@nonexistent.example>: Recipient address rejected: Domain not found",
     C.INVALID_DOMAIN, False, False),
    (550, "5.1.2 Host or domain name not found. Name service error for "
          "name=nonexistent.example type=MX: Host not found",
     C.INVALID_DOMAIN, True, True),
    (550, "5.7.1 Client host rejected: cannot find your reverse hostname, [198.51.100.7]",
     C.POLICY_BLOCK, True, False),
    (554, "5.7.0 Reject, id=12345-07 - spam", C.SPAM_BLOCK, True, False),
    (554, "5.7.0 Reject, id=12345-08 - INFECTED: Eicar-Signature", C.CONTENT_REJECTED, True, False),
    (421, "4.4.2 mx.example.org Error: timeout exceeded", C.NETWORK, False, False),
    (451, "4.3.0 Error: queue file write error", C.TRANSIENT, False, False),
    (452, "4.5.3 Error: too many recipients", C.RATE_LIMITED, False, False),
    (552, "5.5.3 Error: too many recipients", C.RATE_LIMITED, False, False),
    (421, "Service not available, closing transmission channel", C.RATE_LIMITED, False, False),
    # --- Exim / qmail / cPanel
    (550, "No Such User Here", C.INVALID_MAILBOX, True, True),
    (550, "Unrouteable address", C.INVALID_MAILBOX, True, True),
    (550, "Administrative prohibition", C.POLICY_BLOCK, True, False),
    (550, "sorry, no mailbox here by that name. (#5.1.1)", C.INVALID_MAILBOX, True, True),
    (451, "Temporary local problem - please try later", C.TRANSIENT, False, False),
    (550, "Message rejected: Email address is not verified.", C.UNKNOWN, True, False),
    (554, "5.6.0 Message content rejected", C.CONTENT_REJECTED, True, False),
    # --- Wordings without enhanced codes (older or minimal servers)
    (550, "5.7.1 Your IP 198.51.100.7 is blocked", C.REPUTATION_BLOCK, True, False),
    (552, "Message size exceeds maximum permitted", C.MESSAGE_TOO_LARGE, True, False),
    (552, "Requested mail action aborted: exceeded storage allocation",
     C.MAILBOX_FULL, True, False),
    (421, "Connection timed out while waiting for greeting", C.NETWORK, False, False),
    (550, "Relaying denied. Proper authentication required.", C.RELAY_DENIED, True, False),
    (550, "Host unknown (Name server: mx.nowhere.example: host not found)",
     C.INVALID_DOMAIN, True, True),
    (550, "Sorry, this is unknown to us", C.UNKNOWN, True, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("code", "reply", "bounce_class", "permanent", "suppress"),
    REAL_WORLD_REPLIES,
    ids=[f"{row[0]}-{row[2].value}-{i}" for i, row in enumerate(REAL_WORLD_REPLIES)],
)
def test_real_world_reply_is_classified(code, reply, bounce_class, permanent, suppress):
    result = classify(parse_reply(code, reply))
    assert (result.bounce_class, result.permanent, result.suppress) == (
        bounce_class,
        permanent,
        suppress,
    ), result.rule


def test_a_5xx_is_never_suppressed_unless_it_names_the_address():
    suppressed = {
        classify(parse_reply(code, reply)).bounce_class
        for code, reply, *_ in REAL_WORLD_REPLIES
        if classify(parse_reply(code, reply)).suppress
    }
    assert suppressed == {C.INVALID_MAILBOX, C.INVALID_DOMAIN}


def test_reputation_and_policy_blocks_bounce_without_suppressing_the_recipient():
    result = classify(parse_reply(554, "5.7.1 blocked using bl.spamcop.net"))
    assert result.permanent and not result.suppress
    assert result.bounce_class is C.REPUTATION_BLOCK


def test_unmatched_5xx_is_permanent_unknown_and_not_suppressed():
    result = classify(SmtpOutcome(550, None, "computer says no"))
    assert result == classify(SmtpOutcome(550, None, "computer says no"))
    assert (result.bounce_class, result.permanent, result.suppress, result.rule) == (
        C.UNKNOWN,
        True,
        False,
        "unknown.5xx",
    )


def test_unmatched_4xx_is_transient():
    result = classify(SmtpOutcome(451, None, "local error in processing"))
    assert (result.bounce_class, result.permanent) == (C.TRANSIENT, False)


def test_no_reply_at_all_is_a_temporary_network_failure():
    result = classify(SmtpOutcome(NO_REPLY, None, "Connection refused"))
    assert (result.bounce_class, result.permanent, result.suppress) == (C.NETWORK, False, False)


def test_classification_names_the_rule_that_matched():
    rule_ids = {rule.rule_id for rule in DEFAULT_RULES}
    assert len(rule_ids) == len(DEFAULT_RULES)
    assert classify(parse_reply(550, "5.1.1 user unknown")).rule == "mailbox.status"
    assert classify(parse_reply(550, "user unknown")).rule == "mailbox.text"


def test_suppression_classes_are_configurable():
    outcome = parse_reply(552, "5.2.2 mailbox full")
    assert not classify(outcome).suppress
    assert classify(outcome, suppress_classes={C.MAILBOX_FULL}).suppress


def test_custom_rule_table_is_used_in_order():
    rules = (BounceRule("mine", C.POLICY_BLOCK, text=re.compile("frobnicated")), *DEFAULT_RULES)
    result = classify(parse_reply(550, "5.1.1 user frobnicated"), rules=rules)
    assert (result.bounce_class, result.rule) == (C.POLICY_BLOCK, "mine")


def test_success_replies_cannot_be_classified():
    with pytest.raises(ValidationError):
        classify(SmtpOutcome(250, None, "OK"))


@pytest.mark.parametrize("code", [199, 600, -1, 1000])
def test_parse_reply_rejects_codes_outside_smtp(code):
    with pytest.raises(ValidationError):
        parse_reply(code, "x")


@pytest.mark.parametrize(
    ("code", "message", "enhanced", "text"),
    [
        (550, "5.1.1 user unknown", "5.1.1", "user unknown"),
        (550, b"5.1.1 user unknown", "5.1.1", "user unknown"),
        (550, "550-5.1.1 first line\n550 5.1.1 second line", "5.1.1", "first line second line"),
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound", "5.1.10", "RESOLVER.ADR.RecipientNotFound"),
        (
            550,
            "sorry, no mailbox here by that name. (#5.1.1)",
            "5.1.1",
            "sorry, no mailbox here by that name. (#5.1.1)",
        ),
        (550, "blocked: host 10.5.1.100 listed", None, "blocked: host 10.5.1.100 listed"),
        (550, "Exim 4.94.2 says no", None, "Exim 4.94.2 says no"),
        (421, "4.7.0 deferred - 4.16.55.1; see", "4.7.0", "deferred - 4.16.55.1; see"),
        (550, "5.01.001 padded", "5.1.1", "padded"),
        (550, "no code here", None, "no code here"),
        (550, "Mailbox full\u00e9".encode() + b"\xff", None, "Mailbox full\u00e9\ufffd"),
        (550, "550-5.1.1 one 550-5.1.1 two 550 5.1.1 three", "5.1.1", "one two three"),
    ],
)
def test_parse_reply_extracts_the_enhanced_status_code(code, message, enhanced, text):
    outcome = parse_reply(code, message)
    assert (outcome.code, outcome.enhanced, outcome.text) == (code, enhanced, text)


def test_enhanced_code_of_another_class_counts_only_at_the_start_of_a_line():
    assert parse_reply(550, "4.2.2 mailbox full").enhanced == "4.2.2"
    assert parse_reply(550, "mailbox full, see 4.2.2 docs").enhanced is None


@pytest.mark.parametrize(
    ("diagnostic", "expected"),
    [
        (
            "smtp; 550 5.1.1 <a@b.example>: User unknown",
            SmtpOutcome(550, "5.1.1", "<a@b.example>: User unknown"),
        ),
        ("550-5.1.1 a 550 5.1.1 b", SmtpOutcome(550, "5.1.1", "a b")),
        ("452 Too many recipients", SmtpOutcome(452, None, "Too many recipients")),
        ("X-Postfix; Host not found", None),
        ("smtp; ", None),
    ],
)
def test_parse_diagnostic_reads_the_reply_inside_a_dsn_field(diagnostic, expected):
    assert parse_diagnostic(diagnostic) == expected


def test_outcome_from_dsn_falls_back_to_the_status_field():
    outcome = outcome_from_dsn("5.1.2", "X-Postfix; Host or domain name not found")
    assert outcome == SmtpOutcome(550, "5.1.2", "X-Postfix; Host or domain name not found")
    assert classify(outcome).bounce_class is C.INVALID_DOMAIN


def test_outcome_from_dsn_takes_the_status_when_the_reply_has_no_enhanced_code():
    outcome = outcome_from_dsn("5.2.2", "smtp; 552 Mailbox over quota")
    assert outcome == SmtpOutcome(552, "5.2.2", "Mailbox over quota")


def test_outcome_from_dsn_delay_status_is_temporary():
    outcome = outcome_from_dsn("4.4.1", None)
    assert outcome.code == 450
    assert classify(outcome).permanent is False


def test_outcome_from_dsn_rejects_a_success_status():
    with pytest.raises(ValidationError):
        outcome_from_dsn("2.0.0", None)


def test_bounce_class_values_are_snake_case():
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", c.value) for c in BounceClass)
    assert C.AUTH_FAILURE == "auth_failure"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postfix_dsn.eml", [(C.INVALID_MAILBOX, True, True), (C.MAILBOX_FULL, True, False)]),
        ("exchange_dsn.eml", [(C.INVALID_MAILBOX, True, True)]),
        ("gmail_bounce.eml", [(C.INVALID_MAILBOX, True, True)]),
        ("postfix_delayed_dsn.eml", [(C.NETWORK, False, False)]),
        ("qmail_bounce.eml", [(C.INVALID_MAILBOX, True, True)] * 2),
        ("exim_bounce.eml", [(C.INVALID_MAILBOX, True, True)]),
    ],
)
def test_recipients_of_sample_bounces_classify(name, expected):
    parsed = parse_dsn((REPORTS / name).read_bytes())
    assert parsed is not None
    results = [classify(outcome_from_dsn(r.status, r.diagnostic_code)) for r in parsed.recipients]
    assert [(c.bounce_class, c.permanent, c.suppress) for c in results] == expected
