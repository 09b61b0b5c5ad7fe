"""API keys: credentials of applications that send mail (issue 14).

A key is shown once, stored as its SHA-256 (like login tokens), and acts as the user that
created it within its scopes only (app/domain/api_scopes.py says which operation needs which).
Revoking deletes the stored hash, so the next HTTP request with the key is refused at once; open
websocket subscriptions end on the revocation event published to the user's channel (and, if
that message is lost, at their next periodic token check: ``ws_token_check_seconds``).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.adapters.redis_store import RedisStore
from app.batching import SharedLookup
from app.domain.api_scopes import SCOPES, check_scope_names
from app.domain.errors import AuthError, ValidationError
from app.domain.ids import parse_object_id
from app.domain.tokens import hash_token
from app.domain.viewer import Viewer

API_KEY_PREFIX = "mhk_"
MAX_KEYS_PER_USER = 100
MAX_NAME = 100
# lastUsedAt is written at most this often per key: a busy key costs no write per request.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def key_token_id(key_hash: str) -> str:
    """The Viewer.token_id of an API key (login tokens use their bare hash)."""
    return "key:" + key_hash


class ApiKeyService:
    def __init__(self, mongo: Mongo, redis: RedisStore) -> None:
        self.db = mongo.db
        self.redis = redis
        # Concurrent requests (and live subscriptions' checks) share one read of their keys;
        # each answer comes from a read sent after it was asked, so a key deleted (revoked)
        # before a request asked is refused by that request.
        self._keys: SharedLookup[str, dict[str, Any]] = SharedLookup(self._fetch_keys)

    async def create(
        self, viewer: Viewer, name: str, scopes: list[str]
    ) -> tuple[str, dict[str, Any]]:
        """A new key for the viewer; returns (the key, shown only now; its stored document)."""
        name = (name or "").strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValidationError.on("name", f"give a name of 1 to {MAX_NAME} characters")
        unknown = check_scope_names(scopes)
        if unknown or not scopes:
            raise ValidationError.on(
                "scopes", f"scopes must be a non-empty subset of {', '.join(SCOPES)}"
            )
        if viewer.scopes is not None:
            raise ValidationError.on("scopes", "an API key cannot create API keys")
        count = await self.db.api_keys.count_documents({"user_id": viewer.user_id})
        if count >= MAX_KEYS_PER_USER:
            raise ValidationError.on("name", f"at most {MAX_KEYS_PER_USER} keys per user")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        doc = {
            "_id": ObjectId(),
            "hash": hash_token(key),
            "user_id": viewer.user_id,
            # denormalized so authenticating a request is one read (as for login tokens)
            "email": viewer.email,
            "user_name": viewer.name,
            "name": name,
            "prefix": key[: len(API_KEY_PREFIX) + 6],
            "scopes": [s for s in SCOPES if s in scopes],
            "created_at": datetime.now(UTC),
            "last_used_at": None,
        }
        await self.db.api_keys.insert_one(doc)
        return key, doc

    async def of_user(self, viewer: Viewer) -> list[dict[str, Any]]:
        return await self.db.api_keys.find({"user_id": viewer.user_id}).sort("_id", 1).to_list()

    async def revoke(self, viewer: Viewer, key_id: str) -> bool:
        """Delete the key; True if the viewer had it. Its subscriptions are told to end."""
        oid = parse_object_id(key_id)
        if oid is None:
            return False
        doc = await self.db.api_keys.find_one_and_delete({"_id": oid, "user_id": viewer.user_id})
        if doc is None:
            return False
        event = {"type": "revoked", "tokenId": key_token_id(doc["hash"])}
        await self.redis.publish(f"user:{viewer.user_id}", json.dumps(event))
        return True

    async def revoke_all(self, user_id: ObjectId) -> None:
        """A disabled user's keys stop working with their login tokens."""
        await self.db.api_keys.delete_many({"user_id": user_id})

    async def authenticate(self, key: str) -> Viewer:
        key_hash = hash_token(key)
        doc = (await self._keys.get([key_hash])).get(key_hash)
        if doc is None:
            raise AuthError("invalid or revoked API key")
        now = datetime.now(UTC)
        last = doc.get("last_used_at")
        if last is None or now - last >= LAST_USED_GRANULARITY:
            await self.db.api_keys.update_one(
                {"_id": doc["_id"], "last_used_at": last}, {"$set": {"last_used_at": now}}
            )
        return Viewer(
            doc["user_id"],
            doc["email"],
            doc.get("user_name"),
            key_token_id(key_hash),
            scopes=frozenset(doc["scopes"]),
            api_key_id=doc["_id"],
        )

    async def is_live(self, token_id: str) -> bool:
        """Is the key behind this Viewer.token_id still there (not revoked)?"""
        key_hash = token_id.removeprefix("key:")
        return key_hash in await self._keys.get([key_hash])

    async def _fetch_keys(self, hashes: list[str]) -> dict[str, dict[str, Any]]:
        docs = await self.db.api_keys.find({"hash": {"$in": hashes}}).to_list()
        return {doc["hash"]: doc for doc in docs}
