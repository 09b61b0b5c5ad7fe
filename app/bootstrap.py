"""One function wires concrete adapters into services for every process (api, worker, mx)."""

from __future__ import annotations

from dataclasses import dataclass

from app.adapters.blobs import BlobStore
from app.adapters.indexes import ensure_indexes
from app.adapters.mongo import Mongo
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.config import ConfigError, Settings
from app.services.accounts import AccountService
from app.services.attachments import AttachmentService
from app.services.content import ContentService
from app.services.mailbox import MailboxService
from app.services.notifier import Notifier
from app.services.sending import SendingService
from app.services.suppression import SuppressionService


@dataclass
class System:
    settings: Settings
    mongo: Mongo
    redis: RedisStore
    queue: JobQueue
    blobs: BlobStore
    notifier: Notifier
    accounts: AccountService
    mailbox: MailboxService
    content: ContentService
    attachments: AttachmentService
    sending: SendingService
    suppression: SuppressionService

    async def close(self) -> None:
        await self.queue.close()
        await self.redis.close()
        await self.mongo.close()


async def build_system(settings: Settings, *, ensure: bool = True) -> System:
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)} (or run `mailhub dev` for embedded servers)")
    assert settings.mongodb_uri and settings.redis_url
    mongo = Mongo.open(settings.mongodb_uri, settings.mongodb_database, timeout_ms=settings.mongo_timeout_ms)
    if ensure:
        await ensure_indexes(mongo.db)
    redis = RedisStore(settings.redis_url, settings.redis_prefix)
    queue = JobQueue(settings.redis_url, settings.redis_prefix)
    blobs = BlobStore(mongo.db)
    notifier = Notifier()
    accounts = AccountService(mongo, redis, settings)
    content = ContentService(mongo, blobs)
    mailbox = MailboxService(mongo, settings, notifier)
    attachments = AttachmentService(mongo, blobs, settings)
    suppression = SuppressionService(mongo)
    sending = SendingService(mongo=mongo, blobs=blobs, redis=redis, queue=queue, accounts=accounts,
                             attachments=attachments, mailbox=mailbox, notifier=notifier, settings=settings,
                             suppression=suppression)
    notifier.on_release(content.collect)
    return System(settings, mongo, redis, queue, blobs, notifier, accounts, mailbox, content, attachments,
                  sending, suppression)
