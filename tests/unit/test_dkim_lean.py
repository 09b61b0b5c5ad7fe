"""The lean DKIM signer produces dkimpy's exact bytes, on generated messages of every shape
the header and body rules care about (folding, tabs, runs of spaces, duplicate fields, blank
lines at the end, empty bodies), and falls back to dkimpy where it does not parse itself."""

from __future__ import annotations

import base64
import random
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.adapters import dkim_signer
from app.adapters.dkim_signer import DkimKey, DkimSigner

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
TXT = b"v=DKIM1; k=rsa; p=" + base64.b64encode(
    _KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
)
KEY = DkimKey("example.test", "s1", PEM)
NAMES = [
    b"From",
    b"To",
    b"Cc",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"X-Mailer",
    b"MIME-Version",
    b"Content-Type",
    b"References",
    b"In-Reply-To",
    b"Reply-To",
    b"Received",
    b"from",
    b"SUBJECT",
]
WORDS = [b"hello", b"a", b"<x@y.test>", b"=?utf-8?q?caf=C3=A9?=", b"Re:", b"", b"x" * 90]


def _value(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(0, 6)):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice([b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r\n\t", b""]))
    return rng.choice([b" ", b"", b"  ", b"\t"]) + b"".join(parts) + rng.choice([b"", b" ", b"\t"])


def _body(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 12)):
        line = b"".join(
            rng.choice([b"word", b" ", b"  ", b"\t", b"x" * 20, b"", b".", b"\xc3\xa9"])
            for _ in range(rng.randrange(0, 8))
        )
        lines.append(line)
    body = b"\r\n".join(lines)
    return body + rng.choice([b"", b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n", b" \r\n", b"\t\r\n"])


def _message(rng: random.Random) -> bytes:
    fields = [(b"From", b" Alice <alice@example.test>")]
    for _ in range(rng.randrange(0, 10)):
        fields.insert(rng.randrange(0, len(fields) + 1), (rng.choice(NAMES), _value(rng)))
    head = b"".join(name + b":" + value + b"\r\n" for name, value in fields)
    return head + b"\r\n" + _body(rng)


SIGNER = DkimSigner()  # parses the key once (OpenSSL checks an RSA key at length)


def _dkimpy(message: bytes) -> bytes:
    return SIGNER._dkimpy_signature_header(message, KEY)


@pytest.mark.parametrize("seed", range(12))
def test_lean_signatures_are_dkimpys_bytes(seed: int) -> None:
    rng = random.Random(seed)
    signer = SIGNER
    with mock.patch("time.time", return_value=1_772_366_400):
        for _ in range(40):
            message = _message(rng)
            lean = dkim_signer._lean_signature_header(
                message, signer._openssl_key(PEM), b"s1", b"example.test"
            )
            assert lean is not None, message  # well-formed CRLF: the lean path takes it
            assert lean == _dkimpy(message), message


def test_a_lean_signature_verifies() -> None:
    message = (
        b"From: Alice <alice@example.test>\r\nTo: bob@d.test\r\nSubject: Hi  there\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello  world \r\n\r\n"
    )
    header = SIGNER.signature_header(message, KEY)
    assert dkim.verify(header + message, dnsfunc=lambda name, timeout=5: TXT)
    tampered = message.replace(b"Hello", b"Jello")
    assert not dkim.verify(header + tampered, dnsfunc=lambda name, timeout=5: TXT)


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@example.test\r\nSubject: no body",
        b"From: a@example.test\r\nSubject: x\r\n",
        b"From: a@example.test\r\n\r\n",
        b"From: a@example.test\r\n\r\n\r\n\r\n",
        b"From: a@example.test\r\n\r\nlast line without CRLF",
        b"From: a@example.test\r\n\r\n \t \r\n\t\r\n",
        b"From:a@example.test\r\nTo:\r\n\tb@d.test\r\n\r\nx\r\n",
        b"From: a@example.test\r\nFrom: b@example.test\r\nSubject: two froms\r\n\r\nx\r\n",
    ],
)
def test_edge_shapes_match_dkimpy(message: bytes) -> None:
    with mock.patch("time.time", return_value=1_772_366_400):
        assert SIGNER.signature_header(message, KEY) == _dkimpy(message)


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@example.test\nSubject: bare LF\n\nbody\n",
        b"From: a@example.test\r\nSubject: mixed\n\r\nbody\r\n",
        b"From sender@example.test Mon Jan  1 00:00:00 2026\r\nFrom: a@example.test\r\n\r\nx\r\n",
    ],
)
def test_what_the_lean_path_does_not_parse_goes_to_dkimpy(message: bytes) -> None:
    signer = DkimSigner()
    assert (
        dkim_signer._lean_signature_header(
            message, signer._openssl_key(PEM), b"s1", b"example.test"
        )
        is None
    )
    with mock.patch("time.time", return_value=1_772_366_400):
        assert signer.signature_header(message, KEY) == _dkimpy(message)


async def test_sign_many_signs_each_message_with_its_key_or_leaves_it() -> None:
    other = DkimKey("other.test", "s2", PEM)
    messages = [
        (b"From: a@example.test\r\nSubject: one\r\n\r\nx\r\n", KEY),
        (b"From: a@example.test\r\nSubject: unsigned\r\n\r\ny\r\n", None),
        (b"From: a@example.test\nSubject: bare LF\n\nz\n", KEY),  # dkimpy's own path
        (b"From: b@other.test\r\nSubject: two\r\n\r\nw\r\n", other),
    ]
    with mock.patch("time.time", return_value=1_772_366_400):
        signed = await SIGNER.sign_many(messages)
        expected = [SIGNER.signature_header(m, k) + m if k else m for m, k in messages]
    assert signed == expected
    assert b"d=other.test" in signed[3] and signed[1] == messages[1][0]
