"""One function wires concrete adapters into services for every process (api, worker, mx, dev).

``build_system`` is the only place that chooses adapters and passes each service its
dependencies through its constructor; nothing is attached to a service after it is built.
Listeners of committed changes (live events, the search index, blob collection) are
registered on the ``Notifier`` here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.adapters.blobs import BlobStore
from app.adapters.clamav import ClamdScanner
from app.adapters.dkim_signer import DkimSigner
from app.adapters.dns_resolver import DnsResolver
from app.adapters.indexes import ensure_indexes
from app.adapters.mail_auth import MailAuthenticator
from app.adapters.mongo import Mongo
from app.adapters.pubsub import PubSubHub
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.adapters.smtp_transport import Relay, SmtpTransport
from app.adapters.spam_scorer import ModelScorer
from app.adapters.throttle import DomainThrottle
from app.adapters.typesense_index import TypesenseIndex
from app.adapters.webhook_http import WebhookClient
from app.config import ConfigError, Settings
from app.domain.templates import RenderLimits
from app.services.accounts import AccountService
from app.services.after_commit import Notifier
from app.services.campaigns.domains import DomainVerifier
from app.services.campaigns.lists import parts_from_rows
from app.services.campaigns.sender import CampaignSender
from app.services.campaigns.store import CampaignService
from app.services.campaigns.tracking import TrackingService
from app.services.delivery.service import DeliveryService
from app.services.events.log import EventLog
from app.services.events.webhooks import WebhookService
from app.services.feedback.bounces import BounceProcessor
from app.services.feedback.reputation import ReputationService
from app.services.feedback.spam import SpamFeedbackService
from app.services.feedback.suppression import SuppressionService
from app.services.feedback.suppression_views import SuppressionViews
from app.services.inbound.group_commit import InboundStore
from app.services.inbound.pipeline import InboundService
from app.services.mailbox.changes import MailboxChanges
from app.services.mailbox.content import ContentService
from app.services.mailbox.migrations import STEPS, migrate
from app.services.mailbox.queries import MailboxService
from app.services.mailbox.realtime import RealtimeService
from app.services.search.indexing import SearchIndexer
from app.services.search.service import SearchService
from app.services.send_intake.accept import SendIntake
from app.services.send_intake.materialize import SendMaterializer
from app.services.sending.attachments import AttachmentService
from app.services.sending.drafts import DraftService
from app.services.sending.scheduling import SchedulingService
from app.services.sending.send import SendingService
from app.services.templates.render import TemplateRenderer
from app.services.templates.sending import TemplateSender
from app.services.templates.store import TemplateStore

if TYPE_CHECKING:
    from app.adapters.job_worker import BatchClaimWorker


@dataclass
class System:
    """Every service of one process. Each process builds them all (they are cheap to build);
    the worker uses delivery, the MX inbound, the API the rest."""

    settings: Settings
    mongo: Mongo
    redis: RedisStore
    queue: JobQueue
    blobs: BlobStore
    hub: PubSubHub
    notifier: Notifier
    accounts: AccountService
    mailbox: MailboxService  # reads
    mailbox_changes: MailboxChanges  # state changes, deletion
    content: ContentService
    realtime: RealtimeService
    attachments: AttachmentService
    suppression: SuppressionService
    suppression_views: SuppressionViews
    reputation: ReputationService
    bounces: BounceProcessor
    spam_feedback: SpamFeedbackService
    sending: SendingService
    drafts: DraftService
    scheduling: SchedulingService
    delivery: DeliveryService
    inbound: InboundService
    # The one optional capability: without MAILHUB_TYPESENSE_URL there is no search (the API
    # answers searches with a "search is not configured" error; everything else works).
    search: SearchService | None
    # the sending API (issue 14): templates, the event log, outbound webhooks
    templates: TemplateStore
    renderer: TemplateRenderer
    template_sender: TemplateSender
    # the batched send path: accepted now, stored as messages by the materializer job
    send_intake: SendIntake
    materializer: SendMaterializer
    event_log: EventLog
    webhooks: WebhookService
    # Bulk campaigns (issue 15): lists, the batch sender, unsubscribe/tracking, domain checks.
    campaigns: CampaignService
    campaign_sender: CampaignSender
    tracking: TrackingService
    domain_verifier: DomainVerifier

    async def close(self) -> None:
        await self.delivery.close()  # first: in-flight deliveries record their outcomes
        if self.search is not None:
            await self.search.close()
        await self.webhooks.client.close()
        await self.campaign_sender.close()  # before the renderer its renders ahead use
        self.renderer.close()
        await self.hub.close()
        await self.queue.close()
        await self.redis.close()
        await self.mongo.close()

    async def readiness(self) -> dict[str, bool]:
        """Whether each backing system this process needs answers (the api's ``/readyz``)."""
        return {"mongodb": await self.mongo.ping(), "redis": await self.redis.ping()}


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
        await migrate(mongo.db, [*STEPS, ("campaign-lists", parts_from_rows)])
    redis = RedisStore(settings.redis_url, settings.redis_prefix)
    queue = JobQueue(settings.redis_url, settings.redis_prefix)
    blobs = BlobStore(mongo.db)
    hub = PubSubHub(settings.redis_url, settings.redis_prefix)
    secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""

    notifier = Notifier()
    accounts = AccountService(mongo, redis, settings)
    content = ContentService(mongo, blobs)
    mailbox = MailboxService(mongo, settings)
    mailbox_changes = MailboxChanges(mongo, notifier)
    realtime = RealtimeService(mongo, hub)
    attachments = AttachmentService(mongo, blobs, settings)
    suppression = SuppressionService(mongo)
    reputation = ReputationService(mongo, settings)
    bounces = BounceProcessor(mongo, suppression, reputation, secret)
    spam_feedback = SpamFeedbackService(mongo, blobs, mailbox_changes)
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
        reputation=reputation,
    )
    drafts = DraftService(
        mongo=mongo,
        accounts=accounts,
        attachments=attachments,
        mailbox=mailbox,
        notifier=notifier,
        settings=settings,
        sending=sending,
    )
    scheduling = SchedulingService(
        mongo=mongo,
        redis=redis,
        queue=queue,
        mailbox=mailbox,
        notifier=notifier,
        hostname=settings.hostname,
    )
    search = _search(settings, mongo, queue, content)
    templates = TemplateStore(mongo)
    renderer = TemplateRenderer(
        templates,
        RenderLimits(
            max_output_chars=settings.template_max_output_chars,
            max_seconds=settings.template_render_seconds,
        ),
    )
    tracking = TrackingService(mongo, suppression, settings)
    domain_verifier = DomainVerifier(mongo, accounts, DnsResolver(settings.dns_servers))
    event_log = EventLog(
        mongo,
        settle_seconds=settings.event_settle_seconds,
        retention_days=settings.event_retention_days,
    )
    webhook_client = WebhookClient(settings.webhook_timeout_seconds, settings.webhook_allow_private)

    notifier.on_release(content.collect)
    notifier.on_change(realtime.publish_changes)
    if search is not None:  # the index jobs follow every committed change
        notifier.on_change(search.indexer.on_change)

    return System(
        settings=settings,
        mongo=mongo,
        redis=redis,
        queue=queue,
        blobs=blobs,
        hub=hub,
        notifier=notifier,
        accounts=accounts,
        mailbox=mailbox,
        mailbox_changes=mailbox_changes,
        content=content,
        realtime=realtime,
        attachments=attachments,
        suppression=suppression,
        suppression_views=SuppressionViews(mongo, suppression),
        reputation=reputation,
        bounces=bounces,
        spam_feedback=spam_feedback,
        sending=sending,
        drafts=drafts,
        scheduling=scheduling,
        delivery=_delivery(settings, mongo, redis, queue, blobs, suppression, notifier, scheduling),
        inbound=_inbound(settings, mongo, blobs, notifier, bounces, spam_feedback, tracking),
        search=search,
        templates=templates,
        renderer=renderer,
        template_sender=TemplateSender(renderer, sending),
        send_intake=SendIntake(mongo, sending, renderer, queue, hostname=settings.hostname),
        materializer=SendMaterializer(
            mongo=mongo,
            blobs=blobs,
            queue=queue,
            accounts=accounts,
            suppression=suppression,
            renderer=renderer,
            notifier=notifier,
            hostname=settings.hostname,
        ),
        event_log=event_log,
        webhooks=WebhookService(mongo, queue, event_log, webhook_client, settings),
        campaigns=CampaignService(mongo, queue, accounts, templates, domain_verifier),
        campaign_sender=CampaignSender(
            mongo=mongo,
            queue=queue,
            accounts=accounts,
            renderer=renderer,
            suppression=suppression,
            reputation=reputation,
            settings=settings,
        ),
        tracking=tracking,
        domain_verifier=domain_verifier,
    )


def _search(
    settings: Settings, mongo: Mongo, queue: JobQueue, content: ContentService
) -> SearchService | None:
    """Search over Typesense, or None when no Typesense URL is configured."""
    if not settings.typesense_url:
        return None
    key = settings.typesense_api_key.get_secret_value() if settings.typesense_api_key else ""
    index = TypesenseIndex(
        settings.typesense_url,
        key,
        settings.typesense_collection,
        timeout_seconds=settings.typesense_timeout_seconds,
    )
    indexer = SearchIndexer(mongo, index, queue, content, body_chars=settings.search_body_chars)
    return SearchService(mongo, index, indexer, settings)


def _inbound(
    settings: Settings,
    mongo: Mongo,
    blobs: BlobStore,
    notifier: Notifier,
    bounces: BounceProcessor,
    feedback: SpamFeedbackService,
    tracking: TrackingService,
) -> InboundService:
    """The MX side: authentication, the spam model, virus scanning (when clamd is set), bounce
    reports, and the group commit that files accepted mail."""
    return InboundService(
        mongo=mongo,
        blobs=blobs,
        settings=settings,
        store=InboundStore(mongo, notifier, max_batch=settings.mx_batch_max),
        authenticator=MailAuthenticator(settings.dns_servers, settings.hostname),
        scorer=ModelScorer(settings.spam_model_path),
        bounces=bounces,
        feedback=feedback,
        scanner=ClamdScanner(settings.clamd) if settings.clamd else None,
        unsubscribes=tracking,
    )


def _delivery(
    settings: Settings,
    mongo: Mongo,
    redis: RedisStore,
    queue: JobQueue,
    blobs: BlobStore,
    suppression: SuppressionService,
    notifier: Notifier,
    scheduling: SchedulingService,
) -> DeliveryService:
    """Outbound delivery: SMTP transport (direct to MX, or through a relay), DNS, DKIM and the
    per-domain throttles."""
    s = settings
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
        redis,
        concurrency=s.domain_concurrency,
        rate_per_minute=s.domain_rate_per_minute,
        slot_ttl=float(s.delivery_lease_seconds),
    )
    return DeliveryService(
        mongo=mongo,
        redis=redis,
        queue=queue,
        blobs=blobs,
        suppression=suppression,
        notifier=notifier,
        settings=s,
        transport=transport,
        resolver=DnsResolver(s.dns_servers),
        signer=DkimSigner(),
        throttle=throttle,
        scheduling=scheduling,
    )


def job_worker(settings: Settings, options: dict[str, Any], **kwargs: Any) -> BatchClaimWorker:
    """The arq worker of `mailhub worker` (app/adapters/job_worker.py) running the jobs that
    ``options`` (jobs/worker.py) name, on the queue ``JobQueue`` enqueues to."""
    from app.adapters.job_worker import BatchClaimWorker, connection_options

    assert settings.redis_url
    return BatchClaimWorker(
        **connection_options(settings.redis_url, settings.redis_prefix), **options, **kwargs
    )
