"""The gateway's policy: every limit, list and window of the edge stack, as typed configuration.

`GatewayPolicy()` holds the seed's values (Task 3: `kong.yml`, `securityHeaders`,
`rateLimitConfigs`, `authRateLimits`, the CORS origins, the admin IP ranges, the bot list), so a
replica without a policy file behaves exactly as the seed specifies. `load_policy(path)` reads a
YAML file with the same keys (`config/gateway.yaml` documents each one); any key left out keeps
its default. Paths are matched as segment-aware prefixes of the path inside the application
(`/api/v1/transfers` matches `/api/v1/transfers` and `/api/v1/transfers/x`, not
`/api/v1/transfersx`); where several rules match, the longest prefix wins.
"""

from __future__ import annotations

import itertools
import math
import re
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from gateway.constants import (
    AUDIT_BATCH_DELAY_S_MAX,
    AUDIT_BATCH_LINES_MAX,
    BODY_BYTES_MAX_CEILING,
    BODY_BYTES_MAX_DEFAULT,
    CORS_MAX_AGE_S_DEFAULT,
    CPU_PERCENT_MAX_DEFAULT,
    LATENCY_BUCKETS_S_DEFAULT,
    MEMORY_PERCENT_MAX_DEFAULT,
    RATE_LIMIT_CHECK_TIMEOUT_S_DEFAULT,
    RATE_LIMIT_LIMIT_MAX,
    RATE_LIMIT_NAME_LENGTH_MAX,
    RATE_LIMIT_WINDOW_S_MAX,
    STEP_UP_MAX_AGE_S_DEFAULT,
)
from kit.errors import ConfigurationError
from kit.telemetry import LINE_BATCH_DELAY_S, LINE_BATCH_MAX

HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_PATH_PATTERN: Final = r"^/[!-~]*$"  # printable ASCII, no spaces
_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]*$"
_PROJECT_ROOT: Final = Path(__file__).resolve().parents[1]

IpNetwork = IPv4Network | IPv6Network


def is_under(path: str, prefix: str) -> bool:
    """True when `path` is `prefix` or lies below it, segment by segment."""
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] == "/"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteMatch(_Model):
    """A path prefix, optionally for some methods only; a bare string means any method."""

    path: str = Field(pattern=_PATH_PATTERN, max_length=256)
    methods: frozenset[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is None:
            return None
        upper = frozenset(method.upper() for method in value)
        unknown = upper - HTTP_METHODS
        if unknown:
            raise ValueError(f"unknown HTTP methods: {sorted(unknown)}")
        return upper

    def matches(self, method: str, path: str) -> bool:
        """True when this entry covers `method` on `path`."""
        if self.methods is not None and method not in self.methods:
            return False
        return is_under(path, self.path)


_M = TypeVar("_M", bound=RouteMatch)


def longest_match(entries: tuple[_M, ...], method: str, path: str) -> _M | None:
    """The entry with the longest prefix covering the request, or None."""
    best: _M | None = None
    for entry in entries:
        if entry.matches(method, path) and (best is None or len(entry.path) > len(best.path)):
            best = entry
    return best


# --------------------------------------------------------------------------- size limit


class BodyLimitRoute(RouteMatch):
    """A per-route body limit (an upload route that needs more than the default)."""

    bytes_max: int = Field(ge=0, le=BODY_BYTES_MAX_CEILING)


class BodyLimitPolicy(_Model):
    """Request size limit: 413 before reading when Content-Length says so, else while streaming."""

    bytes_max: int = Field(default=BODY_BYTES_MAX_DEFAULT, ge=0, le=BODY_BYTES_MAX_CEILING)
    routes: tuple[BodyLimitRoute, ...] = ()


# --------------------------------------------------------------------------- bots

# The seed's `bot_detection.blacklist` and common scanners; Kong's built-in list adds Scrapy
# and Python-urllib. Patterns are case-insensitive regular expressions searched in the User-Agent.
BOT_DENY_DEFAULT: Final = (
    "curl",
    "wget",
    "python-requests",
    "python-urllib",
    "scrapy",
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "acunetix",
    "netsparker",
    "dirbuster",
    "gobuster",
    "wpscan",
    "whatweb",
    "nessus",
    "openvas",
    "zmeu",
)


class BotPolicy(_Model):
    """User-agent rules: `allow` is checked first, then `deny`; a match on deny is a 403."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = BOT_DENY_DEFAULT
    allow_missing: bool = True  # Kong lets requests without a User-Agent through
    # Health probes and metrics scrapers (a `curl` in a container's health check) reach these
    # whatever their user agent: they carry no customer data.
    exempt: tuple[RouteMatch, ...] = (RouteMatch(path="/health"), RouteMatch(path="/metrics"))

    @field_validator("allow", "deny")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return value


# --------------------------------------------------------------------------- addresses


def _networks(*cidrs: str) -> tuple[IpNetwork, ...]:
    return tuple(ip_network(cidr) for cidr in cidrs)


class ClientAddressPolicy(_Model):
    """Where the client address comes from.

    `X-Forwarded-For` is read only when the TCP peer is one of `trusted_proxies`; the client is
    then the right-most hop that is not itself a trusted proxy. Empty means the peer is the
    client, which is safe by default: nothing a client writes in a header is believed.
    """

    trusted_proxies: tuple[IpNetwork, ...] = ()


class AdminAccessPolicy(_Model):
    """The admin surface: an IP allow-list (the seed's private ranges), a role in the token and
    a second factor behind it."""

    routes: tuple[RouteMatch, ...] = (RouteMatch(path="/api/v1/admin"),)
    allow: tuple[IpNetwork, ...] = Field(
        default_factory=lambda: _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    )
    deny: tuple[IpNetwork, ...] = ()
    required_role: str | None = "admin"
    # The token's `amr` must hold the step-up method (`auth.step_up.amr_required`): a sign-in
    # with a second factor, as PCI DSS 8.4.1 asks of administrative access.
    second_factor: bool = True


# --------------------------------------------------------------------------- CORS


class CorsPolicy(_Model):
    """The seed's CORS settings; a disallowed origin gets no Access-Control-* headers at all."""

    origins: tuple[str, ...] = ("https://dwaybank.com", "https://app.dwaybank.com")
    methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
    headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-ID")
    # Response headers a browser script may read; the rate-limit headers are added to these.
    expose_headers: tuple[str, ...] = ("X-Request-ID", "Retry-After", "WWW-Authenticate")
    allow_credentials: bool = True
    max_age_s: int = Field(default=CORS_MAX_AGE_S_DEFAULT, ge=0, le=86_400)

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return value

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(method.upper() for method in value)
        unknown = set(upper) - HTTP_METHODS
        if unknown:
            raise ValueError(f"unknown HTTP methods: {sorted(unknown)}")
        return upper


# --------------------------------------------------------------------------- authentication


class StepUpPolicy(_Model):
    """RFC 9470 step-up: these routes need a second factor within `max_age_s`."""

    routes: tuple[RouteMatch, ...] = (
        RouteMatch(path="/api/v1/transfers"),
        RouteMatch(path="/api/v1/wallets/connect"),
        RouteMatch(path="/api/v1/users/profile/update"),
    )
    max_age_s: int = Field(default=STEP_UP_MAX_AGE_S_DEFAULT, ge=1, le=86_400)
    amr_required: str = Field(default="mfa", min_length=1, max_length=32)
    acr_values: tuple[str, ...] = ("mfa",)


PUBLIC_ROUTES_DEFAULT: Final = (
    "/health",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/.well-known",
    "/api/v1/auth/register",
    "/api/v1/auth/verify-email",
    "/api/v1/auth/login",
    "/api/v1/auth/mfa/verify",
    "/api/v1/auth/refresh",
    "/api/v1/auth/password/reset",
    # A pending login's second factor: the caller holds an mfa_token, not yet a bearer.
    "/api/v1/auth/mfa/sms/send",
    "/api/v1/auth/mfa/email/send",
    "/api/v1/auth/mfa/webauthn/authenticate",
    # OAuth clients authenticate themselves (RFC 6749 2.3): no user token.
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/api/v1/dev/outbox",
)


class AuthPolicy(_Model):
    """Which routes need a bearer token (all matched routes but `public`) and which step up."""

    public: tuple[RouteMatch, ...] = tuple(RouteMatch(path=p) for p in PUBLIC_ROUTES_DEFAULT)
    realm: str = Field(default="dwaybank", pattern=r"^[A-Za-z0-9._\-]{1,64}$")
    step_up: StepUpPolicy = Field(default_factory=StepUpPolicy)


# --------------------------------------------------------------------------- rate limits


class LimitKey(StrEnum):
    """What a rule counts by."""

    USER = "user"  # the token's subject; the client address when the request is anonymous
    IP = "ip"  # always the client address (login, registration: the caller has no token yet)


class Tier(StrEnum):
    """A customer's plan; it multiplies the per-route limits."""

    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class LimitWindow(_Model):
    """`limit` requests in any `seconds`-long sliding window."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=RATE_LIMIT_NAME_LENGTH_MAX)
    seconds: int = Field(ge=1, le=RATE_LIMIT_WINDOW_S_MAX)
    limit: int = Field(ge=1, le=RATE_LIMIT_LIMIT_MAX)


class TierMultipliers(_Model):
    """The seed's `user_tier_multipliers`; the effective limit is floor(limit x multiplier)."""

    basic: float = Field(default=1.0, gt=0, le=1000)
    premium: float = Field(default=1.0, gt=0, le=1000)
    enterprise: float = Field(default=1.0, gt=0, le=1000)

    def of(self, tier: Tier) -> float:
        """The multiplier of `tier`."""
        multiplier: float = getattr(self, tier.value)
        return multiplier


def _windows(*windows: tuple[str, int, int]) -> tuple[LimitWindow, ...]:
    return tuple(LimitWindow(name=n, seconds=s, limit=limit) for n, s, limit in windows)


class RateLimitRule(_Model):
    """One counter per subject, shared by every route it lists, over one or more windows."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=RATE_LIMIT_NAME_LENGTH_MAX)
    routes: tuple[RouteMatch, ...] = Field(min_length=1)
    windows: tuple[LimitWindow, ...] = Field(min_length=1, max_length=8)
    tier_multipliers: TierMultipliers = Field(default_factory=TierMultipliers)
    key: LimitKey = LimitKey.USER
    # Money-moving routes fail closed (503) when the limiter cannot answer; others fail open.
    is_money_moving: bool = False

    @model_validator(mode="after")
    def _check_windows(self) -> Self:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError(f"rule {self.name}: window names repeat")
        ordered = sorted(self.windows, key=lambda w: w.seconds)
        if len({w.seconds for w in ordered}) != len(ordered):
            raise ValueError(f"rule {self.name}: two windows have the same length")
        for shorter, longer in itertools.pairwise(ordered):
            if longer.limit < shorter.limit:
                # Kong's rule: a longer window with a smaller limit makes the shorter one moot.
                raise ValueError(
                    f"rule {self.name}: window {longer.name} allows less than {shorter.name}"
                )
        multiplier = max(self.tier_multipliers.of(tier) for tier in Tier)
        largest = max(w.limit for w in self.windows)
        if math.floor(largest * multiplier) > RATE_LIMIT_LIMIT_MAX:
            raise ValueError(
                f"rule {self.name}: {largest} x tier multiplier {multiplier:g} exceeds the"
                f" largest limit the limiter keeps ({RATE_LIMIT_LIMIT_MAX:,})"
            )
        return self


RATE_LIMIT_RULES_DEFAULT: Final = (
    # kong.yml: user-service (users and auth routes share one counter), 100/min, 1000/h.
    RateLimitRule(
        name="users",
        routes=(RouteMatch(path="/api/v1/users"), RouteMatch(path="/api/v1/auth")),
        windows=_windows(("minute", 60, 100), ("hour", 3600, 1000)),
    ),
    # kong.yml: wallet-service, 200/min, 2000/h.
    RateLimitRule(
        name="wallets",
        routes=(RouteMatch(path="/api/v1/wallets"), RouteMatch(path="/api/v1/balances")),
        windows=_windows(("minute", 60, 200), ("hour", 3600, 2000)),
    ),
    # rateLimitConfigs login, plus authRateLimits.login (5 per 15 minutes), per address.
    RateLimitRule(
        name="login",
        routes=(RouteMatch(path="/api/v1/auth/login"),),
        windows=_windows(
            ("minute", 60, 5), ("15min", 900, 5), ("hour", 3600, 20), ("day", 86_400, 100)
        ),
        key=LimitKey.IP,
    ),
    RateLimitRule(
        name="wallet-balance",
        routes=(RouteMatch(path="/api/v1/wallets/balance"),),
        windows=_windows(("minute", 60, 60), ("hour", 3600, 500), ("day", 86_400, 2000)),
        tier_multipliers=TierMultipliers(basic=1, premium=2, enterprise=5),
    ),
    RateLimitRule(
        name="transfers",
        routes=(RouteMatch(path="/api/v1/transfers"),),
        windows=_windows(("minute", 60, 10), ("hour", 3600, 100), ("day", 86_400, 500)),
        tier_multipliers=TierMultipliers(basic=1, premium=1.5, enterprise=3),
        is_money_moving=True,
    ),
    # authRateLimits: register 3/hour, mfa_verify 10 per 5 minutes, password_reset 3/hour.
    RateLimitRule(
        name="register",
        routes=(RouteMatch(path="/api/v1/auth/register"),),
        windows=_windows(("hour", 3600, 3)),
        key=LimitKey.IP,
    ),
    RateLimitRule(
        name="mfa-verify",
        routes=(RouteMatch(path="/api/v1/auth/mfa/verify"),),
        windows=_windows(("5min", 300, 10)),
        key=LimitKey.IP,
    ),
    RateLimitRule(
        name="password-reset",
        routes=(RouteMatch(path="/api/v1/auth/password/reset"),),
        windows=_windows(("hour", 3600, 3)),
        key=LimitKey.IP,
    ),
)


class RateLimitPolicy(_Model):
    """Per-route limits; a request is counted against the rule with the longest matching prefix."""

    rules: tuple[RateLimitRule, ...] = RATE_LIMIT_RULES_DEFAULT
    check_timeout_s: float = Field(default=RATE_LIMIT_CHECK_TIMEOUT_S_DEFAULT, gt=0, le=10)

    @field_validator("rules")
    @classmethod
    def _check_names(cls, value: tuple[RateLimitRule, ...]) -> tuple[RateLimitRule, ...]:
        names = [rule.name for rule in value]
        if len(set(names)) != len(names):
            raise ValueError("rate-limit rule names repeat")
        return value


# --------------------------------------------------------------------------- headers, metrics


SECURITY_HEADERS_DEFAULT: Final = {
    # The seed's `securityHeaders`, with two deliberate changes: a CSP for an API that serves no
    # documents (the seed's allowed inline scripts), and X-XSS-Protection "0", OWASP's current
    # advice (the legacy filter it switched on could itself be abused to leak data).
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "0",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cache-Control": "no-store",
}

DOCS_CSP_DEFAULT: Final = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    "worker-src blob:; frame-ancestors 'none'"
)


class SecurityHeadersPolicy(_Model):
    """Headers added to every response that does not set them itself, errors included."""

    headers: dict[str, str] = Field(default_factory=lambda: dict(SECURITY_HEADERS_DEFAULT))
    # The interactive docs load Swagger UI / ReDoc from a CDN; they get this CSP instead.
    docs_routes: tuple[RouteMatch, ...] = (RouteMatch(path="/docs"), RouteMatch(path="/redoc"))
    docs_content_security_policy: str = DOCS_CSP_DEFAULT

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if not re.fullmatch(r"[A-Za-z0-9\-]{1,64}", name) or not content.isprintable():
                raise ValueError(f"header {name!r} is not a valid header")
        return value


class MetricsPolicy(_Model):
    """Prometheus histogram buckets for `http_request_duration_seconds`, and whether FastAPI's
    own OpenTelemetry instrumentation runs.

    `opentelemetry` is off by default: the edge's Prometheus metrics and audit lines record what
    it would, and when on, every request pays for its checks (about 7 % of a bare FastAPI
    request) even when no OpenTelemetry provider is configured. Turn it on to export FastAPI's
    spans, metrics and logs through the process's global OpenTelemetry providers.
    """

    latency_buckets_s: tuple[float, ...] = LATENCY_BUCKETS_S_DEFAULT
    opentelemetry: bool = False

    @field_validator("latency_buckets_s")
    @classmethod
    def _check_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("latency buckets must be a non-empty increasing list")
        return value


class AuditPolicy(_Model):
    """One JSON line per request on this logger (no token, no body, ever), written in batches:
    at most `batch_delay_s` after the request, or as soon as `batch_lines_max` lines wait."""

    is_enabled: bool = True
    logger: str = Field(default="dwaybank.audit", pattern=r"^[A-Za-z0-9_.]{1,100}$")
    batch_delay_s: float = Field(default=LINE_BATCH_DELAY_S, ge=0, le=AUDIT_BATCH_DELAY_S_MAX)
    batch_lines_max: int = Field(default=LINE_BATCH_MAX, ge=1, le=AUDIT_BATCH_LINES_MAX)


class HealthPolicy(_Model):
    """Node memory and CPU in `/health/ready`.

    Report-only by default: Ray's own memory monitor already kills workers near the node's limit,
    and a node-wide figure turning every replica on the node unready at once would turn a busy
    node into an outage.
    """

    memory_percent_max: float = Field(default=MEMORY_PERCENT_MAX_DEFAULT, gt=0, le=100)
    cpu_percent_max: float = Field(default=CPU_PERCENT_MAX_DEFAULT, gt=0, le=100)
    is_memory_critical: bool = False
    is_cpu_critical: bool = False


class GatewayPolicy(_Model):
    """Everything the edge stack decides by; the defaults are the seed's."""

    body_limit: BodyLimitPolicy = Field(default_factory=BodyLimitPolicy)
    bots: BotPolicy = Field(default_factory=BotPolicy)
    client_address: ClientAddressPolicy = Field(default_factory=ClientAddressPolicy)
    admin: AdminAccessPolicy = Field(default_factory=AdminAccessPolicy)
    cors: CorsPolicy = Field(default_factory=CorsPolicy)
    auth: AuthPolicy = Field(default_factory=AuthPolicy)
    rate_limits: RateLimitPolicy = Field(default_factory=RateLimitPolicy)
    security_headers: SecurityHeadersPolicy = Field(default_factory=SecurityHeadersPolicy)
    metrics: MetricsPolicy = Field(default_factory=MetricsPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    health: HealthPolicy = Field(default_factory=HealthPolicy)


def resolve_policy_path(path: Path) -> Path:
    """`path` as given when it exists, else relative to the project root (Ray workers' cwd)."""
    if path.is_absolute() or path.exists():
        return path
    candidate = _PROJECT_ROOT / path
    return candidate if candidate.exists() else path


def load_policy(path: Path | None) -> GatewayPolicy:
    """The policy in the YAML file at `path`, or the defaults when `path` is None.

    Raises:
        ConfigurationError: the file is missing, not YAML, or a key is unknown or invalid.
    """
    if path is None:
        return GatewayPolicy()
    resolved = resolve_policy_path(path)
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the gateway policy {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the gateway policy {path} is not valid YAML") from exc
    if data is None:
        return GatewayPolicy()
    if not isinstance(data, dict):
        raise ConfigurationError(f"the gateway policy {path} must be a mapping of sections")
    try:
        return GatewayPolicy.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigurationError(f"the gateway policy {path}: {where}: {first['msg']}") from exc
