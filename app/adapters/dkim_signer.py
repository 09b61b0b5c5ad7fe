"""DKIM signing (RFC 6376) with dkimpy, the RSA step done by OpenSSL.

dkimpy does the DKIM work (header selection, relaxed canonicalization, body hash, tag list,
folding); this module only swaps its RSA private-key operation, which dkimpy computes with
Python integers (≈5 ms per signature for a 2048-bit key — by itself a cap of ~190 messages/s
per worker), for ``cryptography``'s (≈0.2 ms). RSASSA-PKCS1-v1_5 is deterministic, so the
signature bytes are the same either way; tests check that, and verify with dkimpy.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# Headers we sign when present (RFC 6376 §5.4.1); From is signed twice so that a From added in
# transit breaks the signature (the "oversigning" of §8.15).
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
        bodyhash = base64.b64encode(hashlib.sha256(body).digest())
        sigfields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", canon_policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(time.time())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", bodyhash),
            # Force b= to fold onto its own line (as dkimpy does).
            (b"b", b"0" * 60),
        ]
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
        signature = self.openssl_key.sign(
            h.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )
        idx = [i for i in range(len(fields)) if fields[i][0] == b"b"][0]
        fields[idx] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)  # type: ignore[no-any-return]


class DkimSigner:
    """Signs outgoing messages; parsed keys are cached by PEM."""

    def __init__(self) -> None:
        self._keys: dict[str, rsa.RSAPrivateKey] = {}

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
        signer = _OpenSslDkim(message, linesep=b"\r\n")
        signer.openssl_key = self._openssl_key(key.private_key_pem)
        present = {name.lower() for name, _ in signer.headers}
        include = [h for h in SIGNED if h in present] + [b"from"]
        return signer.sign_relaxed(key.selector.encode(), key.domain.encode(), include)

    def sign(self, message: bytes, key: DkimKey) -> bytes:
        """``message`` with a DKIM-Signature for ``key.domain`` in front."""
        return self.signature_header(message, key) + message
