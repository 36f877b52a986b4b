"""Process settings from the environment (pydantic-settings).

`DATABASE_URL`, `REDIS_URL` and `BLNK_URL` keep their conventional names; everything else is
`DWAYBANK_*`. Secrets are `SecretStr`, so they never print. Without `DATABASE_URL` or
`REDIS_URL` the runtime starts embedded servers under `DWAYBANK_DATA_DIR`. Settings are built at
the edge (the CLI, an app builder, a test fixture) and passed down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR_DEFAULT: Final = Path(".dwaybank")


class Environment(StrEnum):
    """Development generates missing secrets into the data folder; production refuses to."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ServeIngress(StrEnum):
    """How HTTP reaches the ingress replicas."""

    HAPROXY = "haproxy"  # throughput-optimized Serve behind the HAProxy ingress (~3,000 req/s)
    PYTHON = "python"  # Serve's default Python proxy (~500 req/s); for debugging and old clusters


class Settings(BaseSettings):
    """Every knob of the process, with safe local defaults."""

    model_config = SettingsConfigDict(env_prefix="DWAYBANK_", extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = DATA_DIR_DEFAULT

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    blnk_url: str | None = Field(default=None, validation_alias="BLNK_URL")
    blnk_api_key: SecretStr | None = Field(default=None, validation_alias="BLNK_API_KEY")

    # Key-encryption key for envelope encryption: 32 bytes, base64url. Required in production;
    # generated into `data_dir/secrets/kek` (0600) in development.
    kek: SecretStr | None = None
    # Retired key-encryption keys, comma separated, still accepted for decryption.
    kek_retired: SecretStr | None = None

    db_pool_min_size: int = Field(default=1, ge=0, le=64)
    db_pool_max_size: int = Field(default=10, ge=1, le=256)
    db_connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    db_command_timeout_s: float = Field(default=10.0, gt=0, le=600)
    db_connection_lifetime_s: float = Field(default=300.0, gt=0)

    redis_max_connections: int = Field(default=64, ge=1, le=4096)
    redis_socket_timeout_s: float = Field(default=5.0, gt=0, le=60)
    redis_key_prefix: str = Field(default="dwaybank:", min_length=1, max_length=64)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8265, ge=1, le=65535)
    ray_num_cpus: int | None = Field(default=None, ge=1, le=1024)
    serve_ingress: ServeIngress = ServeIngress.HAPROXY
    # HAProxy's own Prometheus and stats listeners (Serve's defaults); two `dwaybank up` on one
    # machine need different values.
    haproxy_metrics_port: int = Field(default=9101, ge=1, le=65535)
    haproxy_stats_port: int = Field(default=8404, ge=1, le=65535)
    # HAProxy's threads (unset: one per `HAPROXY_CORES_PER_THREAD` cores of the machine, at
    # least one). Serve's default of four, on two cores, costs HAProxy ~20 % more CPU a request.
    haproxy_threads: int | None = Field(default=None, ge=1, le=64)
    # How often Serve's controller runs its control loop (Serve's default: 0.1 s). At 0.1 s
    # it spent ~38 ms of CPU a second on an idle two-core machine, and as much under load;
    # at 0.5 s ~11 ms, with the same start time (replica health checks and autoscaling run
    # on their own, slower periods).
    serve_control_loop_s: float = Field(default=0.5, ge=0.05, le=5.0)
    start_timeout_s: float = Field(default=240.0, gt=0, le=3600)
    serve_config_path: Path = Path("serve_config.yaml")

    log_level: str = "INFO"
    log_json: bool = True

    # --- ledger settings (the ledger area adds its fields below this line)
    # One shard beat two on a 2-core machine (each shard adds per-call overhead and halves the
    # batches); raise it with the cores.
    ledger_shard_count: int = Field(default=1, ge=1, le=64)
    ledger_shard_pool_size: int = Field(default=4, ge=1, le=64)
    ledger_batch_items_max: int = Field(default=512, ge=1, le=10_000)
    # Blnk's secure mode: with a master key, every ledger route but / and /health needs X-Blnk-Key.
    ledger_master_key: SecretStr | None = None
    ledger_http_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Exchange rates from a Frankfurter-compatible HTTP provider (ECB reference rates), refreshed
    # by the scheduler actor; unset, the rates are the shipped file's and what operators set.
    ledger_fx_provider_url: str | None = Field(default=None, pattern=r"^https?://[^?#]+$")
    ledger_fx_bases: tuple[str, ...] = ("USD", "EUR", "GBP")
    ledger_fx_refresh_interval_s: float = Field(default=3600.0, ge=60, le=86_400)

    # --- identity settings (the identity area adds its fields below this line)
    user_shard_count: int = Field(default=1, ge=1, le=64)
    # The token issuer: the public base URL of the API host (discovery lives under it).
    auth_issuer: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://[^/?#]+$")
    auth_audience: str = Field(default="dwaybank-api", min_length=1, max_length=100)
    auth_access_token_ttl_s: int = Field(default=900, ge=60, le=3600)  # seed: 15 minutes
    auth_session_idle_s: int = Field(default=900, ge=60, le=86_400)  # seed: session_timeout 15 min
    auth_refresh_family_lifetime_s: int = Field(default=43_200, ge=300, le=2_592_000)  # 12 h
    auth_key_refresh_interval_s: float = Field(default=30.0, ge=1, le=600)
    # Password policy (the seed's securityControls.password_policy), each rule switchable.
    auth_password_min_length: int = Field(default=12, ge=8, le=64)
    auth_password_require_upper: bool = True
    auth_password_require_lower: bool = True
    auth_password_require_digit: bool = True
    auth_password_require_symbol: bool = True
    auth_password_blocklist: bool = True
    # argon2id cost (OWASP's minimum profile: 19 MiB, 2 passes, 1 lane) and its thread pool.
    auth_argon2_memory_kib: int = Field(default=19_456, ge=8_192, le=1_048_576)
    auth_argon2_time_cost: int = Field(default=2, ge=1, le=10)
    auth_argon2_parallelism: int = Field(default=1, ge=1, le=16)
    auth_hash_workers: int = Field(default=2, ge=1, le=64)
    # Lockout (the seed's account_lockout): 5 failures in 15 minutes lock for 30 minutes.
    auth_lockout_threshold: int = Field(default=5, ge=1, le=100)
    auth_lockout_window_s: int = Field(default=900, ge=60, le=86_400)
    auth_lockout_duration_s: int = Field(default=1_800, ge=60, le=86_400)
    # Message providers: `outbox` records messages in PostgreSQL (development).
    auth_sms_provider: str = Field(default="outbox", pattern=r"^(outbox|twilio)$")
    auth_email_provider: str = Field(default="outbox", pattern=r"^(outbox|sendgrid)$")
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    sendgrid_api_key: SecretStr | None = None
    auth_email_from: str = "no-reply@dwaybank.dev"
    # WebAuthn relying party: the id is the site's domain, the origins what browsers send.
    auth_webauthn_rp_id: str = "localhost"
    auth_webauthn_rp_name: str = "DwayBank"
    auth_webauthn_origins: str = "http://localhost:8000"  # comma separated

    # --- gateway settings (the gateway area adds its fields below this line)
    gateway_policy_path: Path | None = None

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return upper

    @property
    def is_production(self) -> bool:
        """True in production mode."""
        return self.env is Environment.PRODUCTION

    @property
    def secrets_dir(self) -> Path:
        """Where development secrets are generated (0700)."""
        return self.data_dir / "secrets"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for error lines and logs."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return "(an unparseable URL)"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
