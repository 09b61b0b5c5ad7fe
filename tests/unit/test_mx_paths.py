"""MxSMTP._getaddr's regex for plain <local@domain> paths gives what aiosmtpd's own
``_getaddr`` (the email package's header parser) gives, for every argument."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from app.mx.server import _PLAIN_PATH, MxSMTP


def _smtp(local_part_limit: int = 0) -> MxSMTP:
    smtp = MxSMTP.__new__(MxSMTP)  # _getaddr reads local_part_limit only
    smtp.local_part_limit = local_part_limit
    return smtp


def _outcome(getaddr: Any, arg: str) -> Any:
    try:
        return getaddr(arg)
    except Exception as e:  # aiosmtpd's own code raises on some arguments ("<"): so must we
        return type(e)


CRAFTED = [
    "<alice@example.test>",
    "<alice@example.test> SIZE=100",
    "<alice@example.test>  SIZE=100 BODY=8BITMIME",
    "<alice@example.test>\tSIZE=1",
    "<alice@example.test> \u3000SIZE=1",
    "<alice@example.test>\x0bSIZE=1",
    "<alice@example.test> (a comment) SIZE=1",
    "<alice@example.test>(c)",
    "<alice@example.test> ",
    "<alice@example.test>>",
    "<alice@example.test>x",
    "<a.b+c=d/e?f^g_h`i{j|k}l~m!n#o$p%q&r'st*u-v@sub.example.test>",
    "<a@b>",
    '<"quoted local"@example.test>',
    "<@relay.test:alice@example.test>",
    "<>",
    "< alice@example.test>",
    "<alice @example.test>",
    "<alice(c)@example.test>",
    "<alice@example.test",
    "alice@example.test",
    " <alice@example.test>",
    "<alice..b@example.test>",
    "<.alice@example.test>",
    "<alice.@example.test>",
    "<alice@[127.0.0.1]>",
    "<alicé@example.test>",
    "<alice@exämple.test>",
    "<alice@@example.test>",
    "<alice@example..test>",
    "<alice@.example.test>",
    "<alice@example.test.>",
    "<",
    "",
]


@pytest.mark.parametrize("arg", CRAFTED)
def test_crafted_paths_give_what_aiosmtpd_gives(arg: str) -> None:
    smtp = _smtp()
    assert _outcome(smtp._getaddr, arg) == _outcome(lambda a: SMTP._getaddr(smtp, a), arg)


def test_the_plain_form_is_the_one_most_mail_uses() -> None:
    assert _PLAIN_PATH.match("<alice@example.test>")
    assert _PLAIN_PATH.match("<bounce+x=y@mail.example.test> SIZE=1")
    assert not _PLAIN_PATH.match('<"a b"@example.test>')


def test_the_local_part_limit_applies_to_plain_paths_too() -> None:
    smtp = _smtp(local_part_limit=5)
    for arg in ("<abcdef@x.test>", "<abcde@x.test> SIZE=1", '<"abcdef"@x.test>'):
        assert _outcome(smtp._getaddr, arg) == _outcome(lambda a: SMTP._getaddr(smtp, a), arg)
    assert smtp._getaddr("<abcdef@x.test>") == (None, None)
    assert smtp._getaddr("<abcde@x.test> SIZE=1") == ("abcde@x.test", "SIZE=1")


def test_random_arguments_give_what_aiosmtpd_gives() -> None:
    rnd = random.Random(11)
    smtp = _smtp()
    plain = 0
    pieces = ["a", "Z", "9", ".", "+", "=", "-", "_", "@", "<", ">", " ", "\t", "(", ")", '"']
    pieces += [",", ":", ";", "[", "]", "\\", "é", "\u3000", "\x0b", "SIZE=1", "x.test"]
    for _ in range(20_000):
        if rnd.random() < 0.5:  # mostly plain paths with something odd somewhere
            local = "".join(rnd.choice(pieces[:8]) for _ in range(rnd.randrange(1, 6)))
            domain = "".join(rnd.choice(pieces[:8]) for _ in range(rnd.randrange(1, 6)))
            tail = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 4)))
            arg = f"<{local}@{domain}>{tail}"
        else:
            arg = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 12)))
        expected = _outcome(lambda a: SMTP._getaddr(smtp, a), arg)
        assert _outcome(smtp._getaddr, arg) == expected, repr(arg)
        plain += _PLAIN_PATH.match(arg) is not None
    assert plain > 2_000  # the fast path was taken often, not only the fallback
