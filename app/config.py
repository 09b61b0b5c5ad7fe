"""Settings: every knob is a ``MAILHUB_*`` environment variable (documented in README.md).

One ``Settings`` object is built at start-up and validated there, so a typo in a URI stops
the process with a message that names the variable instead of failing at the first request.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain.nameservers import parse_nameserver
from app.loops import EventLoop

ENV_PREFIX = "MAILHUB_"


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- services (unset = embedded servers under data_dir, `mailhub dev` only) ---
    mongodb_uri: str | None = None
    mongodb_database: str = "mailhub"
    redis_url: str | None = None
    redis_prefix: str = "mailhub"
    typesense_url: str | None = None
    typesense_api_key: SecretStr | None = None
    typesense_collection: str = "mailbox_items"
    typesense_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    search_body_chars: int = Field(
        default=20_000, ge=1000, le=1_000_000
    )  # body text indexed per item
    clamd: str | None = None

    # --- identity ---
    hostname: str = Field(default_factory=socket.getfqdn)
    secret_key: SecretStr | None = None  # signs cursors and VERP tokens; required in production
    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./var")

    # --- network ---
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535
    )  # `mailhub worker` / `mx`: serve /metrics here
    public_url: str | None = (
        None  # base URL for links (download URLs); default http://http_host:http_port
    )
    # the built front-ends (webmail/, graphiql/ with index.html + assets/); default: the package's
    static_dir: Path | None = None

    # --- outbound delivery ---
    dns_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    delivery_port: int = Field(default=25, ge=1, le=65535)
    delivery_tls: Literal["opportunistic", "verify"] = "opportunistic"
    relay_host: str | None = None
    relay_port: int = Field(default=587, ge=1, le=65535)
    relay_username: str | None = None
    relay_password: SecretStr | None = None
    undo_seconds: int = Field(default=0, ge=0, le=300)
    delivery_timeout_seconds: float = Field(default=60, gt=0, le=600)  # per SMTP command
    delivery_lease_seconds: int = Field(default=300, ge=1)  # > worst-case transaction time
    queue_lifetime_seconds: int = Field(default=5 * 86400, ge=1)
    transactional_lifetime_seconds: int = Field(default=6 * 3600, ge=1)
    delay_notice_seconds: int = Field(default=4 * 3600, ge=1)
    retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [120, 300, 600, 900, 1800, 3600, 7200]
    )
    domain_concurrency: int = Field(default=20, ge=1)  # connections per destination domain
    domain_rate_per_minute: int = Field(default=3000, ge=0)  # messages; 0 = unlimited
    send_limit_per_hour: int = Field(default=500, ge=1)
    send_limit_per_day: int = Field(default=2000, ge=1)

    # --- limits ---
    max_recipients: int = Field(default=100, ge=1, le=1000)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_attachment_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(default=35 * 1024 * 1024, ge=1024)
    token_ttl_hours: int = Field(default=24 * 30, ge=1)
    login_attempts_per_address: int = Field(default=10, ge=1)  # per login_window_seconds
    login_attempts_per_client: int = Field(default=50, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    graphql_max_depth: int = Field(default=12, ge=2)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_tokens: int = Field(default=4000, ge=100)
    # schema/execution.py's shortcut past graphql-core's per-field work (docs/overrides.md);
    # off = graphql-core's own execution, e.g. to rule the shortcut out while debugging
    graphql_fast_execution: bool = True
    # fields once every fragment spread is expanded (schema/limits.py): what execution walks
    graphql_max_fields: int = Field(default=5000, ge=100)
    # the schema is the published contract: introspection is open unless turned off here
    graphql_introspection: bool = True
    mongo_timeout_ms: int = Field(default=3000, ge=100)
    ws_token_check_seconds: float = Field(
        default=30.0, gt=0
    )  # how soon a revoked token ends subscriptions

    # --- inbound (MX) ---
    webhook_secret: SecretStr | None = None
    webhook_tolerance_seconds: int = Field(default=300, ge=1)  # signed timestamps older: replay
    smtp_max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    smtp_max_header_bytes: int = Field(default=1024 * 1024, ge=1024)
    # RFC 5321 §4.5.3.1.6 says 1000; real mail (one-line HTML, folded-less headers) goes far beyond.
    smtp_max_line_bytes: int = Field(default=1024 * 1024, ge=1001)
    smtp_max_recipients: int = Field(default=100, ge=1)
    smtp_timeout_seconds: float = Field(default=300, gt=0)  # RFC 5321 §4.5.3.2.7
    smtp_max_errors: int = Field(default=20, ge=1)  # replies >= 400 before we hang up (Postfix: 20)
    smtp_connections_per_ip: int = Field(default=50, ge=1)  # concurrent connections per client IP
    smtp_messages_per_minute_per_ip: int = Field(default=600, ge=1)
    # Clients exempt from the per-IP limits (Postfix exempts $mynetworks the same way).
    smtp_limit_exempt: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"]
    )
    smtp_tls_cert: Path | None = None  # PEM; with smtp_tls_key, the MX offers STARTTLS
    smtp_tls_key: Path | None = None

    # --- mail clients: IMAP and POP3 (CONTRACT.md "Mail clients: IMAP", docs/imap.md) ---
    imap_host: str = "127.0.0.1"
    imap_port: int = Field(default=1143, ge=0, le=65535)
    imap_tls_port: int | None = Field(default=None, ge=0, le=65535)  # implicit TLS (993)
    imap_tls_cert: Path | None = None  # PEM; with imap_tls_key: STARTTLS/STLS and implicit TLS
    imap_tls_key: Path | None = None
    pop3_port: int = Field(default=1110, ge=0, le=65535)
    imap_max_literal: int = Field(default=50 * 1024 * 1024, ge=1024)  # APPEND size limit
    mx_batch_max: int = Field(default=64, ge=1)  # group commit: messages per transaction
    mx_processes: int = Field(default=1, ge=1, le=64)  # `mailhub mx` workers sharing the port
    # `mailhub mx`: helper processes per MX process that parse and spam-score (None: one when
    # the machine has more cores than MX processes, else none; 0: on the event loop)
    mx_helpers: int | None = Field(default=None, ge=0, le=64)
    spam_model_path: Path | None = None  # default: the newest committed model under ml/models
    reputation_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    reputation_complaint_rate: float = Field(default=0.001, gt=0, le=1)
    reputation_min_recipients: int = Field(default=200, ge=1)
    reputation_window_days: int = Field(default=7, ge=1)

    # --- sending API: templates, event log, outbound webhooks (issue 14) ---
    template_render_seconds: float = Field(default=0.5, gt=0, le=30)  # per message, all parts
    template_max_output_chars: int = Field(default=1_000_000, ge=1000)  # per part
    # events become readable this long after their id was made (docs/sending-api.md: replay)
    event_settle_seconds: float = Field(default=10.0, ge=0, le=600)
    event_retention_days: int = Field(default=30, ge=1)
    # loopback/private/link-local webhook URLs: refused unless this is set (dev and tests)
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)  # per POST
    webhook_batch_size: int = Field(default=100, ge=1, le=1000)  # events per POST
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=86400.0, gt=0)  # then: failing

    # --- campaigns (issue 15) ---
    campaign_batch_max: int = Field(default=500, ge=1, le=5000)  # recipients per batch
    # a sending domain's campaign recipients per day, day by day (then no limit); empty: none
    campaign_warmup_ramp: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1000, 2000, 5000, 10000, 20000, 50000, 100000]
    )
    campaign_stall_seconds: float = Field(default=30.0, ge=0)  # the sweep wakes a late batch
    campaign_lease_seconds: float = Field(default=60.0, gt=0)  # a batch's lease (killed worker)
    # processes that render and build campaign messages beside a worker's batch sender (0: in
    # its own render threads; services/campaigns/messages.py)
    campaign_render_processes: int = Field(default=1, ge=0, le=16)
    tracking_prefetch_seconds: float = Field(default=10.0, ge=0)  # see app/domain/tracking.py

    # --- logs ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # the servers' event loop (app/loops.py): uvloop, or the standard library's
    event_loop: EventLoop = "uvloop"
    log_json: bool = False

    @field_validator(
        "cors_origins",
        "dns_servers",
        "smtp_limit_exempt",
        "retry_schedule",
        "campaign_warmup_ramp",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("mongodb_uri")
    @classmethod
    def _check_mongodb_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("typesense_url", "public_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("dns_servers")
    @classmethod
    def _check_dns_servers(cls, value: list[str]) -> list[str]:
        """IP addresses, each with an optional port (``[v6]:port``): the resolvers (dnspython
        and c-ares) take addresses, not names."""
        for server in value:
            parse_nameserver(server)  # ValueError names the entry
        return value

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    def missing_services(self) -> list[str]:
        """The service URLs a production process needs but were not given."""
        missing = []
        if not self.mongodb_uri:
            missing.append(ENV_PREFIX + "MONGODB_URI")
        if not self.redis_url:
            missing.append(ENV_PREFIX + "REDIS_URL")
        return missing


class ConfigError(Exception):
    """Configuration that cannot work; the message names the variable."""


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment, turning pydantic's report into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = ENV_PREFIX + "_".join(str(part) for part in err["loc"][:1]).upper()
            lines.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
