"""DKIM signing (RFC 6376): rsa-sha256, relaxed/relaxed, the RSA step done by OpenSSL.

The signature is byte for byte what dkimpy 1.1.8 produces (tests compare the two on hundreds of
generated messages, and verify with dkimpy). Two paths:

- ``_lean_signature_header``, for well-formed CRLF messages (everything mailhub's MIME builder
  writes): the same steps as dkimpy's ``sign`` — header parse, header selection, relaxed
  canonicalization, body hash, tag list, folding — without its per-line regular expressions on
  the body and with the whitespace rewrites skipped when a field or body has nothing to rewrite.
  dkimpy's Python work was as much CPU as the RSA signature itself.
- dkimpy's own ``sign`` (``_OpenSslDkim``) for anything else (bare LF line ends, "From " lines,
  malformed header lines), with its RSA work swapped for OpenSSL's: dkimpy computes it with
  Python integers (≈5 ms per 2048-bit signature) and parses the PEM key on every call.

RSASSA-PKCS1-v1_5 is deterministic, so the signature bytes are the same either way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# Headers we sign when present (RFC 6376 §5.4.1); From is signed twice so that a From added in
# transit breaks the signature (the "oversigning" of §8.15). List-Unsubscribe and
# List-Unsubscribe-Post of campaign mail: RFC 8058 §4 requires them signed (Gmail and Yahoo
# check it for bulk senders).
SIGNED = (
    b"from",
    b"to",
    b"cc",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key_pem: str


class _OpenSslDkim(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's DKIM with its RSA work replaced (the rest is dkimpy 1.1.8's): ``sign`` without
    dkimpy's pure-Python parse of the PEM key on every call (a quarter of the signing time;
    the key is parsed once, by OpenSSL), ``gen_header`` with OpenSSL's RSA."""

    openssl_key: rsa.RSAPrivateKey

    def sign_relaxed(self, selector: bytes, domain: bytes, include_headers: list[bytes]) -> bytes:
        """dkimpy's ``sign`` for rsa-sha256, relaxed/relaxed, no ``l=``, ``i=@domain``."""
        canon_policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        include = tuple(x.lower() for x in include_headers)
        self.include_headers = include
        if b"from" not in include:
            raise dkim.ParameterError("The From header field MUST be signed")
        for x in set(include).intersection(self.should_not_sign):
            raise dkim.ParameterError(f"The {x!r} header field SHOULD NOT be signed")
        body = canon_policy.canonicalize_body(self.body)
        self.hasher = hashlib.sha256
        sigfields = _tags(
            selector, domain, include, base64.b64encode(hashlib.sha256(body).digest())
        )
        res = self.gen_header(sigfields, include, canon_policy, b"DKIM-Signature", None)
        self.domain = domain
        self.selector = selector
        self.signature_fields = dict(sigfields)
        return b"DKIM-Signature: " + res

    def gen_header(
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: Any,
        canon_policy: Any,
        header_name: bytes,
        pk: Any,
        standardize: bool = False,
    ) -> bytes:
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        h = dkim.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            h, canon_policy, headers, include_headers, header, dict(fields)
        )
        return _folded_with_signature(fields, _rsa_sign(self.openssl_key, h.digest()))


_NAMELEN = len(b"DKIM-Signature")
_HEADER_NAME = re.compile(rb"([\x21-\x7e]+?):")
_WSP_RUN = re.compile(rb"[\t ]+")
_WSP_BEFORE_CRLF = re.compile(rb"[\t ]+\r\n")
_LINE_BREAK = re.compile(rb"\r?\n")


def _relaxed_value(value: bytes) -> bytes:
    """dkimpy's relaxed header value: unfolded, WSP runs as one space, stripped, CRLF."""
    if b"\n" in value[:-2]:
        value = _LINE_BREAK.sub(b"", value)
    else:
        value = value[:-2]
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip() + b"\r\n"


def _relaxed_body(body: bytes) -> bytes:
    """dkimpy's relaxed body: no WSP before CRLF, WSP runs as one space, no trailing empty
    lines, an empty body as nothing."""
    if b"\t" in body or b" \r\n" in body:
        body = _WSP_BEFORE_CRLF.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        body += b"\r\n"
    elif end + 2 < len(body):
        body = body[: end + 2]
    return b"" if body == b"\r\n" else body


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes] | None:
    """Headers (name, raw value with CRLF, continuation lines included) and body, as dkimpy's
    rfc822_parse gives them; None when the message needs dkimpy's own parse (a bare LF, a
    "From " line, a line that is not a header field)."""
    if message.count(b"\n") != message.count(b"\r\n"):
        return None
    if message.startswith(b"\r\n"):
        return [], message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message, b""
        if head.endswith(b"\r\n"):
            head = head[:-2]
    else:
        head, body = message[:end], message[end + 4 :]
    headers: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not headers:
                return None
            headers[-1][1] += line + b"\r\n"
            continue
        m = _HEADER_NAME.match(line)
        if m is None:
            return None
        headers.append([m.group(1), line[m.end(0) :] + b"\r\n"])
    return headers, body


def _tags(
    selector: bytes, domain: bytes, include: tuple[bytes, ...], bodyhash: bytes
) -> list[tuple[bytes, bytes]]:
    """dkimpy's tag list for rsa-sha256, relaxed/relaxed, ``i=@domain``, ``b=`` last."""
    return [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(int(time.time())).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", bodyhash),
        (b"b", b"0" * 60),  # forces b= to fold onto its own line, as dkimpy does
    ]


@dataclass
class _Unsigned:
    """A lean signature up to its RSA step: the tag list and the digest to sign."""

    fields: list[tuple[bytes, bytes]]
    digest: bytes


def _lean_unsigned(message: bytes, selector: bytes, domain: bytes) -> _Unsigned | None:
    parsed = _parse(message)
    if parsed is None:
        return None
    headers, body = parsed
    present = {name.lower() for name, _ in headers}
    include = tuple(h for h in SIGNED if h in present) + (b"from",)
    if b"from" not in present:
        return None  # dkimpy's error for this case
    fields = _tags(
        selector, domain, include, base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
    )
    value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), namelen=_NAMELEN, linesep=b"\r\n")
    value = dkim.RE_BTAG.sub(b"\\1", value)
    h = hashlib.sha256()
    for field_name, field_value in dkim.select_headers(headers, include):
        h.update(field_name.lower().rstrip() + b":" + _relaxed_value(field_value))
    h.update(b"dkim-signature:" + _relaxed_value(b" " + value + b"\r\n").rstrip())
    return _Unsigned(fields, h.digest())


def _rsa_sign(key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def _folded_with_signature(fields: list[tuple[bytes, bytes]], signature: bytes) -> bytes:
    """The header value (folded, CRLF-terminated) with ``b=`` set to ``signature``."""
    fields = [*fields[:-1], (b"b", base64.b64encode(signature))]
    value = b"; ".join(b"=".join(x) for x in fields) + b"\r\n"
    return dkim.fold(value, namelen=_NAMELEN, linesep=b"\r\n")  # type: ignore[no-any-return]


def _signed(unsigned: _Unsigned, signature: bytes) -> bytes:
    return b"DKIM-Signature: " + _folded_with_signature(unsigned.fields, signature)


def _lean_signature_header(
    message: bytes, key: rsa.RSAPrivateKey, selector: bytes, domain: bytes
) -> bytes | None:
    unsigned = _lean_unsigned(message, selector, domain)
    if unsigned is None:
        return None
    return _signed(unsigned, _rsa_sign(key, unsigned.digest))


def _rsa_sign_all(work: list[tuple[rsa.RSAPrivateKey, bytes]]) -> list[bytes]:
    return [_rsa_sign(key, digest) for key, digest in work]


class DkimSigner:
    """Signs outgoing messages; parsed keys are cached by PEM."""

    def __init__(self) -> None:
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._rsa_thread: ThreadPoolExecutor | None = None

    async def sign_many(self, items: list[tuple[bytes, DkimKey | None]]) -> list[bytes]:
        """Each message with its DKIM-Signature in front (as is when its key is None).

        The RSA steps, most of a signature's CPU, run on a thread of their own: OpenSSL
        releases the GIL while it signs, so they overlap the event loop's work (SMTP sessions,
        database replies) instead of stalling it, and can use another core."""
        out: list[bytes | None] = []
        pending: list[tuple[int, _Unsigned]] = []
        rsa_work: list[tuple[rsa.RSAPrivateKey, bytes]] = []
        for message, key in items:
            unsigned = None
            if key is not None:
                unsigned = _lean_unsigned(message, key.selector.encode(), key.domain.encode())
                if unsigned is None:  # dkimpy's own path (rare): here and now
                    out.append(self._dkimpy_signature_header(message, key) + message)
                    continue
                pending.append((len(out), unsigned))
                rsa_work.append((self._openssl_key(key.private_key_pem), unsigned.digest))
            out.append(None if unsigned is not None else message)
        if rsa_work:
            if self._rsa_thread is None:
                self._rsa_thread = ThreadPoolExecutor(1, thread_name_prefix="dkim-rsa")
            loop = asyncio.get_running_loop()
            signatures = await loop.run_in_executor(self._rsa_thread, _rsa_sign_all, rsa_work)
            for (index, unsigned), signature in zip(pending, signatures, strict=True):
                out[index] = _signed(unsigned, signature) + items[index][0]
        return [m for m in out if m is not None]

    def _openssl_key(self, pem: str) -> rsa.RSAPrivateKey:
        key = self._keys.get(pem)
        if key is None:
            loaded = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("DKIM key is not an RSA key")
            key = self._keys[pem] = loaded
        return key

    def signature_header(self, message: bytes, key: DkimKey) -> bytes:
        """The ``DKIM-Signature:`` field (CRLF-terminated) to prepend to ``message``."""
        openssl_key = self._openssl_key(key.private_key_pem)
        lean = _lean_signature_header(
            message, openssl_key, key.selector.encode(), key.domain.encode()
        )
        if lean is not None:
            return lean
        return self._dkimpy_signature_header(message, key)

    def _dkimpy_signature_header(self, message: bytes, key: DkimKey) -> bytes:
        signer = _OpenSslDkim(message, linesep=b"\r\n")
        signer.openssl_key = self._openssl_key(key.private_key_pem)
        present = {name.lower() for name, _ in signer.headers}
        include = [h for h in SIGNED if h in present] + [b"from"]
        return signer.sign_relaxed(key.selector.encode(), key.domain.encode(), include)
