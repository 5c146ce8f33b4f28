"""Service settings, from the environment and a `.env` file.

Names follow what a Magento/QBO integrator already knows (see `.env.example`).
Secrets are `SecretStr`: they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from app.adapters.kafka_security import KafkaSecurity
    from app.adapters.magento_auth import MagentoAuth
    from app.domain.retry_ladder import Rung

QBO_PRODUCTION_API = "https://quickbooks.api.intuit.com"
QBO_SANDBOX_API = "https://sandbox-quickbooks.api.intuit.com"
QBO_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
QBO_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it and never echoes a secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # Magento
    magento_webhook_secret: SecretStr = Field(validation_alias="MAGENTO_WEBHOOK_SECRET")
    magento_base_url: str = Field("", validation_alias="MAGENTO_BASE_URL")
    magento_access_token: SecretStr = Field(SecretStr(""), validation_alias="MAGENTO_ACCESS_TOKEN")
    # The integration's other three values: with all four, REST calls are signed OAuth 1.0a (HMAC-SHA256).
    magento_consumer_key: str = Field("", validation_alias="MAGENTO_CONSUMER_KEY")
    magento_consumer_secret: SecretStr = Field(SecretStr(""), validation_alias="MAGENTO_CONSUMER_SECRET")
    magento_access_token_secret: SecretStr = Field(SecretStr(""), validation_alias="MAGENTO_ACCESS_TOKEN_SECRET")

    # Other ways a store speaks (the guide, docs/connect-your-store.md): Mage-OS subscriptions whose
    # verification_token is not MAGENTO_WEBHOOK_SECRET (`event=token,…`), Adobe Commerce Webhooks' public
    # key (a path or the PEM), Adobe I/O Events' client id and key server.
    mageos_event_secrets: SecretStr = Field(SecretStr(""), validation_alias="MAGQB_MAGEOS_EVENT_SECRETS")
    adobe_webhook_public_key: str = Field("", validation_alias="MAGQB_ADOBE_WEBHOOK_PUBLIC_KEY")
    adobe_io_client_id: str = Field("", validation_alias="MAGQB_ADOBE_IO_CLIENT_ID")
    adobe_io_key_url: str = Field("https://static.adobeioevents.com", validation_alias="MAGQB_ADOBE_IO_KEY_URL")
    # The REST follower: seconds between passes (it runs when MAGENTO_BASE_URL and credentials are set).
    follow_interval_seconds: float = Field(60.0, ge=1, le=86400, validation_alias="MAGQB_FOLLOW_INTERVAL")
    # An order magqb never saw that a change feed (the follower, Mage-OS updated/paid/cancelled, Adobe I/O
    # Events) brings is booked only if the change it reports came within this many hours of its placing.
    unseen_order_max_age_hours: float = Field(72.0, gt=0, validation_alias="MAGQB_UNSEEN_ORDER_MAX_AGE_HOURS")

    # QuickBooks Online
    quickbooks_client_id: str = Field(validation_alias="QUICKBOOKS_CLIENT_ID")
    quickbooks_client_secret: SecretStr = Field(validation_alias="QUICKBOOKS_CLIENT_SECRET")
    # The first refresh token only (rotated ones live in the token store); `magqb connect` gets one instead.
    quickbooks_refresh_token: SecretStr = Field(SecretStr(""), validation_alias="QUICKBOOKS_REFRESH_TOKEN")
    quickbooks_realm_id: str = Field(validation_alias="QUICKBOOKS_REALM_ID")
    quickbooks_sandbox: bool = Field(True, validation_alias="QUICKBOOKS_SANDBOX")
    quickbooks_api_base_url: str = Field("", validation_alias="QUICKBOOKS_API_BASE_URL")
    quickbooks_token_url: str = Field(QBO_TOKEN_URL, validation_alias="QUICKBOOKS_TOKEN_URL")
    quickbooks_minor_version: int = Field(75, validation_alias="QUICKBOOKS_MINOR_VERSION")
    quickbooks_timeout_seconds: float = Field(30.0, validation_alias="QUICKBOOKS_TIMEOUT_SECONDS")
    # `magqb connect`: Intuit's consent page, and where it sends the browser back (registered in the app's
    # settings at developer.intuit.com; a loopback URI, which `magqb connect` listens on).
    quickbooks_authorize_url: str = Field(QBO_AUTHORIZE_URL, validation_alias="QUICKBOOKS_AUTHORIZE_URL")
    quickbooks_redirect_uri: str = Field("http://127.0.0.1:8765/callback", validation_alias="QUICKBOOKS_REDIRECT_URI")

    # Kafka
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # How every Kafka client connects (app.adapters.kafka_security): a managed cluster wants SASL_SSL.
    kafka_security_protocol: str = Field("PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: str | None = Field(None, validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_cafile: str | None = Field(None, validation_alias="KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: str | None = Field(None, validation_alias="KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: str | None = Field(None, validation_alias="KAFKA_SSL_KEYFILE")
    kafka_partitions: int = Field(8, ge=1, validation_alias="MAGQB_PARTITIONS")
    # Unset: the cluster's, min(3, brokers) (app.adapters.kafka_admin.cluster_replication).
    kafka_replication_factor: int | None = Field(None, ge=1, validation_alias="MAGQB_REPLICATION_FACTOR")
    kafka_connect_timeout_seconds: float = Field(30.0, gt=0, validation_alias="MAGQB_KAFKA_CONNECT_TIMEOUT")
    kafka_session_timeout_seconds: float = Field(10.0, ge=6, le=300, validation_alias="MAGQB_SESSION_TIMEOUT")
    kafka_produce_timeout_seconds: float = Field(10.0, gt=0, validation_alias="MAGQB_PRODUCE_TIMEOUT")

    # Dispatch to QuickBooks
    qbo_requests_per_minute: int = Field(500, ge=0, validation_alias="MAGQB_QBO_REQUESTS_PER_MINUTE")
    qbo_requests_per_second: int = Field(10, ge=0, validation_alias="MAGQB_QBO_REQUESTS_PER_SECOND")
    qbo_max_in_flight: int = Field(10, ge=1, le=10, validation_alias="MAGQB_QBO_MAX_IN_FLIGHT")
    throttle_backoff_seconds: float = Field(60.0, ge=0, validation_alias="MAGQB_THROTTLE_BACKOFF")
    retry_delays: str = Field("30s,5m,30m,2h", validation_alias="MAGQB_RETRY_DELAYS")
    # An order waiting this long with no change is stuck (app.domain.stuck); unset: the ladder and an hour.
    stuck_after_minutes: float | None = Field(None, gt=0, validation_alias="MAGQB_STUCK_AFTER_MINUTES")
    circuit_cooldown_seconds: float = Field(30.0, gt=0, validation_alias="MAGQB_CIRCUIT_COOLDOWN")
    # Intuit's monthly allowance of reads (queries, GETs) for the app's tier; 0 = no projection warning.
    qbo_monthly_read_budget: int = Field(500_000, ge=0, validation_alias="MAGQB_QBO_MONTHLY_READ_BUDGET")

    # This service
    data_dir: Path = Field(Path(".magqb"), validation_alias="MAGQB_DATA_DIR")
    # The console's session cookies are sealed with this (any long random text); unset: a key made once and kept
    # in MAGQB_DATA_DIR. Set it when the console runs on several hosts behind one name.
    console_secret: SecretStr = Field(SecretStr(""), validation_alias="MAGQB_CONSOLE_SECRET")
    # The console's users (`magqb console add-user`); unset: MAGQB_DATA_DIR/console-users.sqlite3.
    console_users_file: Path | None = Field(None, validation_alias="MAGQB_CONSOLE_USERS_FILE")
    # The console's address as its users reach it (https://books.example.com): Intuit sends the browser back to
    # <it>/quickbooks/callback after consent (register that in the Intuit app). Unset: the request's own host.
    console_url: str | None = Field(None, validation_alias="MAGQB_CONSOLE_URL")
    # The workers' /metrics pages (comma-separated URLs): the console's overview shows each company's requests in
    # the last minute against the quota, and the follower's lag, from them (as `magqb top` does).
    console_metrics_urls: str = Field("", validation_alias="MAGQB_CONSOLE_METRICS_URLS")
    # The console is reached over TLS (a proxy in front of it): its cookies are sent only over HTTPS.
    console_secure_cookies: bool = Field(False, validation_alias="MAGQB_CONSOLE_SECURE_COOKIES")
    # Seals the realms' refresh tokens on the magqb.tokens topic, where every worker host reads them; unset:
    # this host's file alone (one worker host). The same key on every host (`magqb token new-key` makes one).
    token_key: SecretStr = Field(SecretStr(""), validation_alias="MAGQB_TOKEN_KEY")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="MAGQB_MAX_BODY_BYTES")
    # The largest Kafka record a producer sends (faust's and aiokafka's max_request_size): an order
    # the ingress accepts must fit in one, with room for the dead letter that may one day carry it.
    ingress_read_timeout_seconds: float = Field(10.0, gt=0, le=300, validation_alias="MAGQB_INGRESS_READ_TIMEOUT")
    ingress_max_connections: int = Field(512, ge=1, validation_alias="MAGQB_INGRESS_MAX_CONNECTIONS")
    # Repeats of bodies already recorded answered per source and minute before 429 (0: no limit).
    ingress_repeats_per_minute: int = Field(60, ge=0, validation_alias="MAGQB_INGRESS_REPEATS_PER_MINUTE")
    max_event_bytes: int = Field(1_000_000, ge=65536, le=16 * 1024 * 1024, validation_alias="MAGQB_MAX_EVENT_BYTES")
    app_id: str = Field("magqb", validation_alias="MAGQB_APP_ID")
    # Before every topic name and the consumer group (MAGQB_APP_ID): installations sharing a cluster stay apart.
    topic_prefix: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9._-]*$", validation_alias="MAGQB_TOPIC_PREFIX")
    # Where every process serves /metrics when given a metrics port (loopback unless you open it).
    metrics_host: str = Field("127.0.0.1", validation_alias="MAGQB_METRICS_HOST")
    # Seconds between a worker's rounds of lag, orders-by-state and oldest-unbooked figures.
    monitor_seconds: float = Field(15.0, gt=0, le=3600, validation_alias="MAGQB_MONITOR_SECONDS")
    # Where the worker keeps the orders' table: on disk under MAGQB_DATA_DIR (RocksDB: memory flat however
    # many orders, a restart reads only the changelog written since), or in memory (rebuilt from the whole
    # changelog at every start: for a laptop, or a disk that cannot be trusted).
    table_store: Literal["rocksdb", "memory"] = Field("rocksdb", validation_alias="MAGQB_TABLE_STORE")
    # RocksDB's memory for the orders' table, in MiB: one block cache for every partition's database
    # (active and standby), memtables charged to it (app.adapters.rocks_store).
    table_memory_mb: int = Field(64, ge=8, le=65536, validation_alias="MAGQB_TABLE_MEMORY_MB")
    log_level: str = Field("INFO", validation_alias="MAGQB_LOG_LEVEL")

    # How orders map to QBO documents: a TOML file (docs/mapping.example.toml); none = the defaults.
    mapping_file: Path | None = Field(None, validation_alias="MAGQB_MAPPING_FILE")

    @field_validator("magento_webhook_secret", "quickbooks_client_secret")
    @classmethod
    def _not_blank(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v

    @property
    def console_users_path(self) -> Path:
        return self.console_users_file or self.data_dir / "console-users.sqlite3"

    @field_validator("console_secret")
    @classmethod
    def _console_secret(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and len(v.get_secret_value()) < 32:
            raise ValueError("needs at least 32 characters (a cookie an attacker holds must not give the key away)")
        return v

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value().strip():
            from app.adapters.token_topic import TokenKeyError, parse_key

            try:
                parse_key(v.get_secret_value())
            except TokenKeyError as exc:
                raise ValueError(str(exc).removeprefix("MAGQB_TOKEN_KEY ")) from None
        return v

    @field_validator("mageos_event_secrets")
    @classmethod
    def _mageos_secrets(cls, v: SecretStr) -> SecretStr:
        from app.sources.mageos import parse_event_secrets

        parse_event_secrets(v.get_secret_value())  # a ValueError names the bad entry, never a token
        return v

    @property
    def magento_rest_configured(self) -> bool:
        """A base URL and some credentials: the follower runs, notifications can be fetched."""
        return bool(self.magento_base_url.strip() and self.magento_access_token.get_secret_value().strip())

    @field_validator("retry_delays")
    @classmethod
    def _ladder(cls, v: str) -> str:
        from app.domain.retry_ladder import parse_ladder

        parse_ladder(v)  # raises LadderError (a ValueError) with the reason
        return v

    @property
    def retry_ladder(self) -> tuple[Rung, ...]:
        from app.domain.retry_ladder import parse_ladder

        return parse_ladder(self.retry_delays)

    @field_validator("quickbooks_client_id", "quickbooks_realm_id")
    @classmethod
    def _not_blank_str(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @property
    def qbo_api_base(self) -> str:
        """Base URL of the Accounting API; an explicit URL (the local sandbox) wins."""
        if self.quickbooks_api_base_url:
            return self.quickbooks_api_base_url.rstrip("/")
        return QBO_SANDBOX_API if self.quickbooks_sandbox else QBO_PRODUCTION_API

    @property
    def kafka_broker_url(self) -> str:
        """Faust wants kafka:// URLs; KAFKA_BOOTSTRAP_SERVERS is the plain host:port list."""
        return ";".join(f"kafka://{h.strip()}" for h in self.kafka_bootstrap_servers.split(",") if h.strip())

    def kafka_security(self) -> KafkaSecurity:
        from app.adapters.kafka_security import KafkaSecurity

        return KafkaSecurity(protocol=self.kafka_security_protocol.strip().upper(),
                             mechanism=(self.kafka_sasl_mechanism or "").strip().upper() or None,
                             username=self.kafka_sasl_username or None,
                             password=self.kafka_sasl_password.get_secret_value() or None,
                             cafile=self.kafka_ssl_cafile or None, certfile=self.kafka_ssl_certfile or None,
                             keyfile=self.kafka_ssl_keyfile or None)

    def magento_auth(self) -> MagentoAuth:
        """OAuth 1.0a with the integration's four values, or Bearer MAGENTO_ACCESS_TOKEN (MagentoAuthError)."""
        from app.adapters.magento_auth import magento_auth

        return magento_auth(self.magento_consumer_key, self.magento_consumer_secret, self.magento_access_token,
                            self.magento_access_token_secret)


def _env_name(field_name: str) -> str:
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field_name.upper()


def describe_error(exc: ValidationError) -> str:
    """One line per bad setting, named by its environment variable, never echoing its value."""
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        env = _env_name(name) if name in Settings.model_fields else name
        if err["type"] == "missing":
            lines.append(f"missing required setting {env} (set it in the environment or .env)")
        else:
            lines.append(f"invalid setting {env}: {err['msg']}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_error(exc)) from None
    from app import redact
    from app.sources.mageos import parse_event_secrets

    redact.register_permanent(*parse_event_secrets(settings.mageos_event_secrets.get_secret_value()).values())
    redact.register_permanent(*(s.get_secret_value() for s in (
        settings.magento_webhook_secret, settings.magento_access_token, settings.magento_consumer_secret,
        settings.magento_access_token_secret, settings.mageos_event_secrets, settings.quickbooks_client_secret,
        settings.quickbooks_refresh_token, settings.kafka_sasl_password, settings.token_key,
        settings.console_secret)))
    from app.adapters import kafka_security

    security = settings.kafka_security()
    try:
        security.check()
    except kafka_security.KafkaSecurityError as exc:
        raise SettingsError(str(exc)) from None
    kafka_security.register(settings.kafka_bootstrap_servers, security)
    from app import topics

    topics.configure(settings.topic_prefix)
    if settings.topic_prefix and not settings.app_id.startswith(settings.topic_prefix):
        # The consumer group and faust's changelogs ({app_id}-…) are named by it: prefixed as the topics are.
        settings = settings.model_copy(update={"app_id": settings.topic_prefix + settings.app_id})
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
