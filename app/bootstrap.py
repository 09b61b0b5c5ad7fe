"""One function wires concrete adapters into services for every process (api, worker, mx)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.adapters.blobs import BlobStore
from app.adapters.indexes import ensure_indexes
from app.adapters.mongo import Mongo
from app.adapters.pubsub import PubSubHub
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.config import ConfigError, Settings
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.feedback.spam import SpamFeedbackService
from app.services.feedback.suppression import SuppressionService
from app.services.mailbox.content import ContentService
from app.services.mailbox.realtime import RealtimeService
from app.services.mailbox.service import MailboxService
from app.services.sending.attachments import AttachmentService
from app.services.sending.service import SendingService

if TYPE_CHECKING:
    from app.adapters.job_worker import BatchClaimWorker


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
    hub: PubSubHub
    realtime: RealtimeService
    reputation: Any = None  # issue 4: ReputationService, BounceProcessor, InboundService
    bounces: Any = None
    inbound: Any = None
    suppression_views: Any = None
    search: Any = None  # issue 6: SearchService; None without MAILHUB_TYPESENSE_URL
    delivery: Any = None  # issue 3: DeliveryService, SchedulingService
    scheduling: Any = None
    spam_feedback: Any = None  # issue 5: SpamFeedbackService

    async def close(self) -> None:
        if self.delivery is not None:  # first: in-flight deliveries record their outcomes
            await self.delivery.close()
        if self.search is not None:
            await self.search.close()
        await self.hub.close()
        await self.queue.close()
        await self.redis.close()
        await self.mongo.close()


async def build_system(settings: Settings, *, ensure: bool = True) -> System:
    missing = settings.missing_services()
    if missing:
        raise ConfigError(f"set {', '.join(missing)} (or run `mailhub dev` for embedded servers)")
    if settings.environment == "production" and not settings.secret_key:
        raise ConfigError(
            "MAILHUB_SECRET_KEY: required in production (it signs cursors and bounce addresses)"
        )
    assert settings.mongodb_uri and settings.redis_url
    mongo = Mongo.open(
        settings.mongodb_uri, settings.mongodb_database, timeout_ms=settings.mongo_timeout_ms
    )
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
    sending = SendingService(
        mongo=mongo,
        blobs=blobs,
        redis=redis,
        queue=queue,
        accounts=accounts,
        attachments=attachments,
        mailbox=mailbox,
        notifier=notifier,
        settings=settings,
        suppression=suppression,
    )
    hub = PubSubHub(settings.redis_url, settings.redis_prefix)
    realtime = RealtimeService(mongo, hub)
    notifier.on_release(content.collect)
    notifier.on_change(realtime.publish_changes)
    system = System(
        settings=settings,
        mongo=mongo,
        redis=redis,
        queue=queue,
        blobs=blobs,
        notifier=notifier,
        accounts=accounts,
        mailbox=mailbox,
        content=content,
        attachments=attachments,
        sending=sending,
        suppression=suppression,
        hub=hub,
        realtime=realtime,
    )
    system.spam_feedback = SpamFeedbackService(mongo, blobs, mailbox)
    _add_inbound(system)
    system.inbound.feedback = system.spam_feedback
    _add_delivery(system)
    _add_search(system)
    return system


def _add_search(system: System) -> None:
    """Search (issue 6): the index jobs follow every committed change."""
    from app.services.search.service import build_search

    system.search = build_search(system.settings, system.mongo, system.queue, system.content)
    if system.search is not None:
        system.notifier.on_change(system.search.indexer.on_change)


def _add_inbound(system: System) -> None:
    """The MX side: reputation, bounce processing and the inbound pipeline (issue 4)."""
    from app.adapters.clamav import ClamdScanner
    from app.adapters.mail_auth import MailAuthenticator
    from app.adapters.spam_scorer import ModelScorer
    from app.services.feedback.bounces import BounceProcessor
    from app.services.feedback.reputation import ReputationService
    from app.services.feedback.suppression_views import SuppressionViews
    from app.services.inbound.group_commit import InboundStore
    from app.services.inbound.pipeline import InboundService

    s = system.settings
    secret = s.secret_key.get_secret_value().encode() if s.secret_key else b""
    system.reputation = ReputationService(system.mongo, s)
    system.suppression_views = SuppressionViews(system.mongo, system.suppression)
    system.sending.reputation = system.reputation
    system.bounces = BounceProcessor(system.mongo, system.suppression, system.reputation, secret)
    system.inbound = InboundService(
        mongo=system.mongo,
        blobs=system.blobs,
        settings=s,
        store=InboundStore(system.mongo, system.notifier, max_batch=s.mx_batch_max),
        authenticator=MailAuthenticator(s.dns_servers, s.hostname),
        scorer=ModelScorer(s.spam_model_path),
        bounces=system.bounces,
        scanner=ClamdScanner(s.clamd) if s.clamd else None,
    )


def _add_delivery(system: System) -> None:
    """Outbound delivery (issue 3): SMTP transport, DKIM, domain throttles, scheduling."""
    from app.adapters.dkim_signer import DkimSigner
    from app.adapters.dns_resolver import DnsResolver
    from app.adapters.smtp_transport import Relay, SmtpTransport
    from app.adapters.throttle import DomainThrottle
    from app.services.delivery.service import DeliveryService
    from app.services.sending.scheduling import SchedulingService

    s = system.settings
    password = s.relay_password.get_secret_value() if s.relay_password else None
    relay = Relay(s.relay_host, s.relay_port, s.relay_username, password) if s.relay_host else None
    transport = SmtpTransport(
        local_hostname=s.hostname,
        port=s.delivery_port,
        tls=s.delivery_tls,
        timeout=s.delivery_timeout_seconds,
        relay=relay,
    )
    throttle = DomainThrottle(
        system.redis,
        concurrency=s.domain_concurrency,
        rate_per_minute=s.domain_rate_per_minute,
        slot_ttl=float(s.delivery_lease_seconds),
    )
    system.scheduling = SchedulingService(
        mongo=system.mongo,
        redis=system.redis,
        queue=system.queue,
        mailbox=system.mailbox,
        notifier=system.notifier,
        sending=system.sending,
    )
    system.delivery = DeliveryService(
        mongo=system.mongo,
        redis=system.redis,
        queue=system.queue,
        blobs=system.blobs,
        suppression=system.suppression,
        notifier=system.notifier,
        settings=s,
        transport=transport,
        resolver=DnsResolver(s.dns_servers),
        signer=DkimSigner(),
        throttle=throttle,
        scheduling=system.scheduling,
    )


def job_worker(settings: Settings, options: dict[str, Any], **kwargs: Any) -> BatchClaimWorker:
    """The arq worker of `mailhub worker` (app/adapters/job_worker.py) running the jobs that
    ``options`` (jobs/worker.py) name, on the queue ``JobQueue`` enqueues to."""
    from app.adapters.job_worker import BatchClaimWorker, connection_options

    assert settings.redis_url
    return BatchClaimWorker(
        **connection_options(settings.redis_url, settings.redis_prefix), **options, **kwargs
    )
