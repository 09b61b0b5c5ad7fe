"""Accounts: hosted domains, users and their addresses, login tokens."""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from bson import ObjectId
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.adapters.mongo import Mongo, as_domain_error, is_duplicate_key
from app.adapters.redis_store import RedisStore
from app.batching import SharedLookup
from app.config import Settings
from app.domain.addresses import domain_of, normalize_email, parse_address
from app.domain.errors import (
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    ValidationError,
)
from app.domain.ids import parse_object_id
from app.domain.tokens import hash_token
from app.domain.viewer import Viewer
from app.services.api_keys import ApiKeyService, is_api_key

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown address as slow as a wrong password,
# so timing does not reveal which addresses exist.


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a login takes as long either way.
    Made on first use: an argon2 hash costs ~130 ms, which no process should pay to start."""
    return _hasher.hash("not-a-real-password")


TOKEN_PREFIX = "mh_"


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str

    def zone_line(self) -> str:
        value = self.value if self.type == "MX" else f'"{self.value}"'
        return f"{self.name}. IN {self.type} {value}"


def _dkim_public_key(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


class AccountService:
    def __init__(self, mongo: Mongo, redis: RedisStore, settings: Settings) -> None:
        self.db = mongo.db
        self.redis = redis
        self.settings = settings
        self.api_keys = ApiKeyService(mongo, redis)  # keys authenticate like tokens (issue 14)
        # Concurrent sends share one read of their senders' addresses (each answer from a
        # query sent after it was asked, as fresh as a query of its own).
        self._addresses: SharedLookup[ObjectId, list[str]] = SharedLookup(self._fetch_addresses)
        # Concurrent requests share one read of their session tokens, the same way: a token
        # revoked before a request asked is refused by that request's answer.
        self._tokens: SharedLookup[str, dict[str, Any]] = SharedLookup(self._fetch_tokens)

    # --- domains -------------------------------------------------------------------------

    async def add_domain(self, name: str) -> tuple[dict[str, Any], list[DnsRecord]]:
        """Host a domain: create its DKIM key (RSA-2048) and return the DNS records to publish."""
        domain = name.strip().lower().rstrip(".")
        parse_address(f"postmaster@{domain}", field="domain")  # the same syntax rules as addresses
        existing = await self.db.domains.find_one({"_id": domain})
        if existing is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            existing = {
                "_id": domain,
                "created_at": datetime.now(UTC),
                "dkim": {"selector": "mh" + datetime.now(UTC).strftime("%Y%m"), "private_key": pem},
            }
            try:
                await self.db.domains.insert_one(existing)
            except Exception as e:
                if not is_duplicate_key(e):
                    raise
                existing = await self.db.domains.find_one({"_id": domain}) or existing
        return existing, self.dns_records(existing)

    def dns_records(self, domain_doc: dict[str, Any]) -> list[DnsRecord]:
        domain = domain_doc["_id"]
        host = self.settings.hostname
        dkim = domain_doc["dkim"]
        return [
            DnsRecord(domain, "MX", f"10 {host}."),
            DnsRecord(domain, "TXT", f"v=spf1 mx a:{host} -all"),
            DnsRecord(
                f"{dkim['selector']}._domainkey.{domain}",
                "TXT",
                f"v=DKIM1; k=rsa; p={_dkim_public_key(dkim['private_key'])}",
            ),
            DnsRecord(
                f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
            ),
        ]

    async def is_hosted(self, domain: str) -> bool:
        return await self.db.domains.count_documents({"_id": domain.lower()}, limit=1) > 0

    async def hosted_among(self, domains: set[str]) -> set[str]:
        """Which of ``domains`` (lower case) are hosted here: one read by ``_id``."""
        if not domains:
            return set()
        found = self.db.domains.find({"_id": {"$in": sorted(domains)}}, {"_id": 1})
        return {d["_id"] async for d in found}

    async def domain_names(self) -> list[str]:
        """Every hosted domain, sorted (`mailhub domains list`)."""
        return [d["_id"] async for d in self.db.domains.find({}, {"_id": 1}).sort("_id", 1)]

    # --- users ---------------------------------------------------------------------------

    async def create_user(
        self, email: str, password: str, name: str | None = None
    ) -> dict[str, Any]:
        address = parse_address(email, field="email")
        key = normalize_email(address.email)
        if not await self.is_hosted(domain_of(key)):
            raise ValidationError.on(
                "email",
                f"domain {domain_of(key)} is not hosted here; run `mailhub domains add` first",
            )
        if len(password) < 8:
            raise ValidationError.on("password", "password must be at least 8 characters")
        user = {
            "_id": ObjectId(),
            "email": key,
            "name": name or address.name,
            "password_hash": _hasher.hash(password),
            "created_at": datetime.now(UTC),
            "state": 0,
        }
        try:
            await self.db.identities.insert_one(
                {
                    "address": key,
                    "user_id": user["_id"],
                    "primary": True,
                    "created_at": user["created_at"],
                }
            )
        except Exception as e:
            if is_duplicate_key(e):
                raise Conflict(f"{key} already exists") from e
            raise
        await self.db.users.insert_one(user)
        return user

    async def add_alias(self, user_email: str, alias: str) -> None:
        """Give a user another address: mail to it lands in their mailbox; they may send as it."""
        user = await self.db.users.find_one({"email": normalize_email(user_email)})
        if user is None:
            raise NotFound(f"no user {user_email}")
        key = normalize_email(parse_address(alias, field="alias").email)
        if not await self.is_hosted(domain_of(key)):
            raise ValidationError.on("alias", f"domain {domain_of(key)} is not hosted here")
        try:
            await self.db.identities.insert_one(
                {
                    "address": key,
                    "user_id": user["_id"],
                    "primary": False,
                    "created_at": datetime.now(UTC),
                }
            )
        except Exception as e:
            if is_duplicate_key(e):
                raise Conflict(f"{key} is already taken") from e
            raise

    async def addresses_of(self, user_id: ObjectId) -> list[str]:
        """The user's addresses, the primary one first."""
        return (await self._addresses.get([user_id])).get(user_id, [])

    async def _fetch_addresses(self, user_ids: list[ObjectId]) -> dict[ObjectId, list[str]]:
        docs = await self.db.identities.find(
            {"user_id": {"$in": user_ids}}, {"user_id": 1, "address": 1, "primary": 1}
        ).to_list()
        docs.sort(key=lambda d: not d.get("primary"))  # stable: primary first, the rest in order
        found: dict[ObjectId, list[str]] = {}
        for doc in docs:
            found.setdefault(doc["user_id"], []).append(doc["address"])
        return found

    async def users_for_addresses(self, addresses: list[str]) -> dict[str, ObjectId]:
        keys = sorted({normalize_email(a) for a in addresses})
        docs = await self.db.identities.find(
            {"address": {"$in": keys}}, {"address": 1, "user_id": 1}
        ).to_list()
        return {d["address"]: d["user_id"] for d in docs}

    async def get_user(self, user_id: ObjectId) -> dict[str, Any]:
        user = await self.db.users.find_one({"_id": user_id}, {"password_hash": 0})
        if user is None:
            raise NotFound("user not found")
        return user

    # --- sessions ------------------------------------------------------------------------

    async def login(self, email: str, password: str, client: str) -> tuple[str, dict[str, Any]]:
        """Check a password and issue a bearer token (stored hashed, expiring, revocable)."""
        user = await self.verify_password(email, password, client)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        s = self.settings
        now = datetime.now(UTC)
        await self.db.api_tokens.insert_one(
            {
                "_id": hash_token(token),
                "user_id": user["_id"],
                # denormalized so authenticating a request is one read; disabling a user revokes
                # every token (set_disabled), so these never outlive the account
                "email": user["email"],
                "name": user.get("name"),
                "created_at": now,
                "expires_at": now + timedelta(hours=s.token_ttl_hours),
                "client": client,
            }
        )
        return token, user

    async def verify_password(self, email: str, password: str, client: str) -> dict[str, Any]:
        """The user whose address (or alias) and password these are, under the login rate
        limits (per client, and per address after failures); shared by the API's login and
        the IMAP/POP3 logins. Raises ``RateLimited`` or ``AuthError``."""
        key = normalize_email(email or "")
        s = self.settings
        per_client = await self.redis.hit(
            f"login-client:{client}", s.login_attempts_per_client, s.login_window_seconds
        )
        if not per_client.allowed:
            raise RateLimited(
                "too many login attempts from this client",
                retry_after_seconds=per_client.retry_after_seconds,
            )
        failures = await self.redis.peek(f"login-fail:{key}", s.login_window_seconds)
        if failures >= s.login_attempts_per_address:
            raise RateLimited(
                "too many failed logins for this address",
                retry_after_seconds=s.login_window_seconds,
            )
        user = await self.db.users.find_one({"email": key}) if key else None
        if user is None:
            identity = await self.db.identities.find_one({"address": key}) if key else None
            user = await self.db.users.find_one({"_id": identity["user_id"]}) if identity else None
        if not self._password_ok(user, password) or user is None or user.get("disabled"):
            await self.redis.hit(f"login-fail:{key}", 1 << 30, s.login_window_seconds)
            raise AuthError("wrong email or password")
        await self.redis.reset(f"login-fail:{key}", s.login_window_seconds)
        if _hasher.check_needs_rehash(user["password_hash"]):
            await self.db.users.update_one(
                {"_id": user["_id"]}, {"$set": {"password_hash": _hasher.hash(password)}}
            )
        user.pop("password_hash", None)
        return user

    @staticmethod
    def _password_ok(user: dict[str, Any] | None, password: str) -> bool:
        try:
            return (
                _hasher.verify(user["password_hash"] if user else _dummy_hash(), password or "")
                and user is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    async def authenticate(self, token: str | None) -> Viewer:
        if not token:
            raise AuthError("authentication required: send Authorization: Bearer <token>")
        if is_api_key(token):
            return await self.api_keys.authenticate(token)
        key = hash_token(token)
        doc = (await self._tokens.get([key])).get(key)
        now = datetime.now(UTC)
        if doc is None or doc.get("revoked_at") or doc["expires_at"] <= now:
            raise AuthError("invalid or expired token")
        return Viewer(doc["user_id"], doc["email"], doc.get("name"), doc["_id"])

    async def _fetch_tokens(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        docs = await self.db.api_tokens.find({"_id": {"$in": ids}}).to_list()
        return {doc["_id"]: doc for doc in docs}

    async def set_disabled(self, user_id: ObjectId, disabled: bool = True) -> None:
        """Disable (or re-enable) a user; disabling revokes every token at once."""
        await self.db.users.update_one({"_id": user_id}, {"$set": {"disabled": disabled}})
        if disabled:
            await self.api_keys.revoke_all(user_id)
            await self.db.api_tokens.update_many(
                {"user_id": user_id, "revoked_at": None},
                {"$set": {"revoked_at": datetime.now(UTC)}},
            )

    async def revoke(self, token: str) -> bool:
        result = await self.db.api_tokens.update_one(
            {"_id": hash_token(token)}, {"$set": {"revoked_at": datetime.now(UTC)}}
        )
        return result.modified_count == 1

    async def token_is_live(self, token_id: str) -> bool:
        if token_id.startswith("key:"):
            return await self.api_keys.is_live(token_id)
        doc = (await self._tokens.get([token_id])).get(token_id)  # shared, as authenticate's
        return bool(doc and not doc.get("revoked_at") and doc["expires_at"] > datetime.now(UTC))

    async def token_still_live(self, token_id: str) -> bool | None:
        """``token_is_live``, or None when the mail store cannot answer right now: a live
        subscription outlasts a database blip and asks again (a revocation applies as soon as
        the store answers), instead of every client reconnecting at once."""
        try:
            return await self.token_is_live(token_id)
        except Exception as e:
            if isinstance(as_domain_error(e), ServiceUnavailable):
                return None
            raise


__all__ = ["AccountService", "DnsRecord", "hash_token", "parse_object_id"]
