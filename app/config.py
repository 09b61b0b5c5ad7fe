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
    public_url: str | None = None  # base URL for links (download URLs); default http://http_host:http_port

    # --- outbound delivery ---
    dns_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    delivery_port: int = Field(default=25, ge=1, le=65535)
    delivery_tls: Literal["opportunistic", "verify"] = "opportunistic"
    relay_host: str | None = None
    relay_port: int = Field(default=587, ge=1, le=65535)
    relay_username: str | None = None
    relay_password: SecretStr | None = None
    undo_seconds: int = Field(default=0, ge=0, le=300)
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
    mongo_timeout_ms: int = Field(default=3000, ge=100)

    # --- inbound (MX) ---
    webhook_secret: SecretStr | None = None
    smtp_max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)

    # --- logs ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    @field_validator("cors_origins", "dns_servers", mode="before")
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
        for server in value:
            host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
            if port and not port.isdigit():
                raise ValueError(f"{server!r} is not host or host:port")
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
