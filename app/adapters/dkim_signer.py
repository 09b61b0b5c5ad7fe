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
    """dkimpy's DKIM with its ``gen_header`` RSA call replaced (the rest is dkimpy 1.1.8's)."""

    openssl_key: rsa.RSAPrivateKey

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
    """Signs outgoing messages; parsed keys are cached by PEM digest."""

    def __init__(self) -> None:
        self._keys: dict[str, rsa.RSAPrivateKey] = {}

    def _openssl_key(self, pem: str) -> rsa.RSAPrivateKey:
        digest = hashlib.sha256(pem.encode()).hexdigest()
        key = self._keys.get(digest)
        if key is None:
            loaded = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("DKIM key is not an RSA key")
            key = self._keys[digest] = loaded
        return key

    def signature_header(self, message: bytes, key: DkimKey) -> bytes:
        """The ``DKIM-Signature:`` field (CRLF-terminated) to prepend to ``message``."""
        signer = _OpenSslDkim(message, linesep=b"\r\n")
        signer.openssl_key = self._openssl_key(key.private_key_pem)
        present = {name.lower() for name, _ in signer.headers}
        include = [h for h in SIGNED if h in present] + [b"from"]
        header: bytes = signer.sign(
            key.selector.encode(),
            key.domain.encode(),
            key.private_key_pem.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return header

    def sign(self, message: bytes, key: DkimKey) -> bytes:
        """``message`` with a DKIM-Signature for ``key.domain`` in front."""
        return self.signature_header(message, key) + message
