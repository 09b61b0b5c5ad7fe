"""Bearer credentials are stored as their SHA-256: a database leak reveals no usable token."""

from __future__ import annotations

import hashlib


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
