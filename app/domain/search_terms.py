"""The search vocabulary: how text, addresses, labels and file names become index terms.

The index document and the query compiler both go through these functions, so a query
matches exactly what was indexed. Every term is stored *encoded* (``encode_term``): the
encoded alphabet has no backtick, space, comma, bracket, parenthesis, ``&``, ``|``, ``:``,
``=`` or ``!``, so a user-supplied value wrapped in backticks can never end the value early
and become Typesense filter syntax (the isolation guarantee of docs/search.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

MAX_TERM_CHARS = 48  # longer runs (base64, hashes) are cut: same rule for documents and queries
_WORD = re.compile(r"[^\W_]+")
_SPACES = re.compile(r"\s+")
# Combining marks are dropped only after Latin, Greek and Cyrillic letters (café → cafe, as
# Typesense does); in other scripts (Japanese dakuten) they change the letter.
_FOLDABLE_BELOW = 0x0530


def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text`` (NFKC, accents off Latin letters, casefold)."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(char) and out and ord(out[-1][-1]) < _FOLDABLE_BELOW:
            continue
        out.append(char)
    return unicodedata.normalize("NFKC", "".join(out)).casefold()


def words(text: str) -> list[str]:
    """Folded words of ``text``: runs of letters and digits; punctuation separates them."""
    return [w[:MAX_TERM_CHARS] for w in _WORD.findall(fold(text))]


def encode_term(value: str) -> str:
    """The filter-safe spelling of a term: percent-encoded except [A-Za-z0-9_.~@+-]."""
    return quote(value, safe="@+")


def word_terms(texts: Iterable[str | None]) -> set[str]:
    return {encode_term(w) for text in texts if text for w in words(text)}


def phrase_key(value: str) -> str:
    """A multi-word value as one key: folded, single-spaced (``from:"Alice Smith"``)."""
    return _SPACES.sub(" ", fold(value)).strip()


def address_terms(address: dict[str, Any] | None) -> set[str]:
    """What ``from:``/``to:``/``cc:``/``bcc:`` match for one address.

    The full address, its local part, its domain and each parent domain, the display name,
    and every word of name and address: ``from:alice``, ``from:example.com``,
    ``from:"Alice Smith"`` and ``from:alice@example.com`` all find Alice.
    """
    if not address:
        return set()
    name = address.get("name") or ""
    email_address = (address.get("email") or "").strip()
    keys = {phrase_key(name)} if name.strip() else set()
    if email_address:
        full = fold(email_address)
        keys.add(full)
        local, _, domain = full.rpartition("@")
        if local:
            keys.add(local)
        labels = domain.split(".")
        keys.update(".".join(labels[i:]) for i in range(len(labels) - 1))
        keys.add(domain)
    keys.update(words(name))
    keys.update(words(email_address))
    return {encode_term(k) for k in keys if k}


def address_query_term(value: str) -> str:
    """The key ``from:value`` looks up (a leading ``@`` names a domain)."""
    return encode_term(phrase_key(value).lstrip("@"))


def filename_terms(filename: str | None) -> set[str]:
    """What ``filename:`` matches: the whole name, its extension, and its words."""
    if not filename:
        return set()
    full = phrase_key(filename)
    keys = {full, *words(filename)}
    stem, dot, extension = full.rpartition(".")
    if dot and stem and extension:
        keys.add(extension)
    return {encode_term(k) for k in keys if k}


def label_term(label: str) -> str:
    """Labels match case-insensitively: ``label:work`` finds ``Work``."""
    return encode_term(phrase_key(label))
