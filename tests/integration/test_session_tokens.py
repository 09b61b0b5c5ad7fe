"""Session tokens: concurrent requests share one read of their tokens, and each still gets its
own answer — its viewer, or UNAUTHENTICATED for a revoked, expired or forged token."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.adapters.mongo import Mongo
from app.adapters.redis_store import RedisStore
from app.domain.errors import AuthError
from app.domain.tokens import hash_token
from app.services.accounts import AccountService
from tests.support.cleanup import drop_database
from tests.support.commands import CommandLog

DOMAIN = "tokens.test"


@pytest.fixture
async def accounts(settings):  # type: ignore[no-untyped-def]
    commands = CommandLog()
    mongo = Mongo.open(settings.mongodb_uri, settings.mongodb_database, event_listeners=[commands])
    redis = RedisStore(settings.redis_url, settings.redis_prefix)
    service = AccountService(mongo, redis, settings)
    await service.add_domain(DOMAIN)
    yield service, commands
    await drop_database(mongo.client, settings.mongodb_database)
    await redis.close()
    await mongo.close()


async def _token(accounts: AccountService, local: str) -> str:
    await accounts.create_user(f"{local}@{DOMAIN}", "correct horse battery")
    token, _ = await accounts.login(f"{local}@{DOMAIN}", "correct horse battery", "test")
    return token


async def test_concurrent_requests_share_one_read_and_each_gets_its_own_answer(accounts):
    service, commands = accounts
    alice, bob, carol, dave = [await _token(service, n) for n in ("alice", "bob", "carol", "dave")]
    assert await service.revoke(carol)
    await service.db.api_tokens.update_one(
        {"_id": hash_token(dave)}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(1)}}
    )
    tokens = [alice, bob, carol, dave, "mh_forged"] * 8

    commands.clear()
    answers = await asyncio.gather(
        *(service.authenticate(t) for t in tokens), return_exceptions=True
    )

    for token, answer in zip(tokens, answers, strict=True):
        if token == alice:
            assert not isinstance(answer, BaseException) and answer.email == f"alice@{DOMAIN}"
        elif token == bob:
            assert not isinstance(answer, BaseException) and answer.email == f"bob@{DOMAIN}"
        else:  # revoked, expired, forged: the same error, saying nothing about which
            assert isinstance(answer, AuthError), (token, answer)
            assert answer.message == "invalid or expired token"
    finds = commands.finds("api_tokens")
    assert 1 <= len(finds) < len(tokens) // 4, finds  # shared: 40 requests, a few reads
    assert all(set(f) == {"_id"} and "$in" in f["_id"] for f in finds)


async def test_a_token_revoked_between_two_requests_is_refused_by_the_second(accounts):
    service, _ = accounts
    token = await _token(service, "erin")
    assert (await service.authenticate(token)).email == f"erin@{DOMAIN}"
    assert await service.revoke(token)
    with pytest.raises(AuthError):  # nothing remembered: every request's answer is a new read
        await service.authenticate(token)


async def test_live_subscriptions_check_their_tokens_together(accounts):
    """A live subscription asks now and then whether its token still holds (schema/realtime.py);
    many asking at once share a read, and a revoked or expired token is not live."""
    service, commands = accounts
    alice, bob = await _token(service, "alice"), await _token(service, "bob")
    assert await service.revoke(bob)
    ids = [hash_token(alice), hash_token(bob), "no-such-token"] * 10

    commands.clear()
    live = await asyncio.gather(*(service.token_is_live(i) for i in ids))

    assert live == [True, False, False] * 10
    assert 1 <= len(commands.finds("api_tokens")) < len(ids) // 4


async def test_api_keys_are_read_together_and_a_deleted_key_is_refused(accounts):
    """The sending API's keys (issue 14): concurrent requests share a read of their keys, each
    gets its own viewer with its scopes, and a revoked (deleted) key is refused at once."""
    service, commands = accounts
    await service.create_user(f"frank@{DOMAIN}", "correct horse battery")
    await service.create_user(f"grace@{DOMAIN}", "correct horse battery")
    frank, _ = await service.login(f"frank@{DOMAIN}", "correct horse battery", "test")
    grace, _ = await service.login(f"grace@{DOMAIN}", "correct horse battery", "test")
    frank_key, _ = await service.api_keys.create(await service.authenticate(frank), "a", ["send"])
    grace_key, doc = await service.api_keys.create(
        await service.authenticate(grace), "b", ["send", "read"]
    )
    keys = [frank_key, grace_key, "mhk_forged"] * 8

    commands.clear()
    answers = await asyncio.gather(*(service.authenticate(k) for k in keys), return_exceptions=True)

    for key, answer in zip(keys, answers, strict=True):
        if key == frank_key:
            assert not isinstance(answer, BaseException)
            assert answer.email == f"frank@{DOMAIN}" and answer.scopes == {"send"}
        elif key == grace_key:
            assert not isinstance(answer, BaseException)
            assert answer.email == f"grace@{DOMAIN}" and answer.scopes == {"send", "read"}
        else:
            assert isinstance(answer, AuthError), (key, answer)
    assert 1 <= len(commands.finds("api_keys")) < len(keys) // 4
    viewer = answers[1]
    assert not isinstance(viewer, BaseException) and viewer.token_id
    assert await service.token_is_live(viewer.token_id)

    assert await service.api_keys.revoke(await service.authenticate(grace), str(doc["_id"]))
    assert not await service.token_is_live(viewer.token_id)
    with pytest.raises(AuthError):
        await service.authenticate(grace_key)
