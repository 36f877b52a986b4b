"""OAuth 2.0 for first-party and partner apps: authorization code + PKCE, refresh, revocation,
introspection (RFC 6749, 7636, 7009, 7662, 9207), with OpenID Connect ID tokens.

* Clients are registered by an administrator; redirect URIs are compared exactly, PKCE with
  S256 is mandatory for every client, and confidential clients authenticate with
  `client_secret_basic` or `client_secret_post` (only a SHA-256 of the 256-bit secret is kept).
* `authorize` is called by the user's app with the user's bearer token (this is an API, not a
  login page): the session must carry a verified second factor. The code lives 60 seconds, is
  single use, and a replayed code revokes the tokens it produced (RFC 6749 section 4.1.2).
* Tokens issued to a client carry `client_id`; its refresh tokens work only for that client.
* A refresh may ask for a subset of the granted scope (RFC 6749 section 6): the new access token
  carries only that subset, while the refresh family keeps the original grant, so a later
  refresh may ask for all of it again. Asking beyond the grant is `invalid_scope` and rotates
  nothing.
* A redirect URI is https, a native app's private-use scheme, or plain http on a loopback IP
  literal only (RFC 8252 sections 7.3 and 8.3, RFC 9700 section 2.1), written as an RFC 3986
  URI (no spaces, raw non-ASCII or broken escapes) whose https host is a DNS name or an IP.
* Introspection (RFC 7662 section 4) shows a client only tokens issued to itself, unless the
  client is registered with the `introspect` permission (a resource server); any other token
  answers `{"active": false}`, exactly as an unknown one does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg

from auth import refresh as refresh_tokens
from auth.audit import record_event
from auth.constants import (
    AUTHORIZATION_CODE_BYTES,
    AUTHORIZATION_CODE_TTL_S,
    CLIENT_SECRET_BYTES,
    OAUTH_SCOPES,
)
from auth.dependencies import AuthDependencies
from auth.errors import OAuthError
from auth.models import AuthEvent, AuthGrant, IssuedTokens, Outcome, RequestContext, RevokeReason
from auth.otp import token_digest
from auth.repository import oauth as repository
from auth.service.sessions import issue_tokens, refresh
from auth.tokens import AccessClaims, InvalidTokenError
from users import service as users

VERIFIER_LENGTH_MIN = 43
VERIFIER_LENGTH_MAX = 128
# An S256 challenge: BASE64URL(SHA-256(verifier)) without padding, 43 characters (RFC 7636 4.2).
S256_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
CLIENT_NAME_LENGTH_MAX = 100
# A permission of the client itself, registered among its scopes: it may introspect tokens
# issued to other clients and first-party ones. A user never grants it (authorization refuses
# it), so no token carries it.
INTROSPECTION_SCOPE: Final = "introspect"
CLIENT_PERMISSION_SCOPES: Final = (INTROSPECTION_SCOPE,)
# The only hosts a plain-http redirect URI may name: a native app's loopback listener, as IP
# literals (RFC 8252 section 8.3: `localhost` may resolve elsewhere, so it is refused too).
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1"})
# RFC 3986 section 2: a URI is made of these characters, and `%` only begins an escape of two
# hex digits (an IRI, spaces or `<` are not a URI: clients and browsers re-encode them in ways
# an exact comparison would not match). `#` is left out: a fragment is refused anyway.
_URI_TEXT: Final = re.compile(r"(?:[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
# A DNS host name (RFC 1123 section 2.1): dot-separated labels of letters, digits and inner
# hyphens, each at most 63 characters.
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class OAuthClientError(OAuthError):
    """The client failed to authenticate (RFC 6749 `invalid_client`)."""

    code: ClassVar[str] = "AUTH_OAUTH_INVALID_CLIENT"
    status: ClassVar[int] = 401


def _oauth_error(error: str, description: str) -> OAuthError:
    return OAuthError(description, error=error)


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    """A new client; the secret is shown once."""

    client_id: str
    client_secret: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """The query of `GET /oauth/authorize`."""

    response_type: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None


def _is_redirect_uri(uri: str) -> bool:
    # RFC 6749 section 3.1.2: absolute, without a fragment (the code is added to the query). A
    # native app's private-use scheme (RFC 8252 section 7.1) has no host; an https URI must have
    # one. Plain http would carry the code across the network in clear, so it is only for a
    # loopback listener on the device itself (RFC 8252 section 7.3, RFC 9700 section 2.1),
    # named by IP literal and without user information.
    try:
        parts = urlsplit(uri)
        _ = parts.port  # an out-of-range or non-numeric port raises
    except ValueError:
        return False
    if not parts.scheme or _URI_TEXT.fullmatch(uri) is None:
        return False
    if parts.scheme == "http":
        return "@" not in parts.netloc and parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "https":
        return _is_web_host(parts.netloc, parts.hostname)
    # A private-use scheme is a reverse domain name the app controls (RFC 8252 section 7.1):
    # it has a period, which no scheme a browser acts on itself has (javascript:, data:, file:).
    return "." in parts.scheme


def _is_web_host(netloc: str, host: str | None) -> bool:
    """Whether an https URI names a host a browser can reach as written: a DNS name, an IPv4
    address, or an IPv6 literal in brackets (RFC 3986 section 3.2.2)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "[" not in netloc and _HOST_NAME.fullmatch(host) is not None
    return ("[" in netloc) == (address.version == 6)


def _without_loopback_port(uri: str) -> str:
    """`uri` with the port left out when it is a plain-http loopback URI, else `uri`."""
    parts = urlsplit(uri)
    host = parts.hostname
    if parts.scheme != "http" or host not in LOOPBACK_HOSTS or host is None or parts.port is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"[{host}]" if ":" in host else host))


def _is_registered(uri: str, registered: list[str]) -> bool:
    """Whether `uri` is one of the client's redirect URIs, compared exactly, except that a
    loopback URI may name any port: a native app listens on whatever port the system gives it
    at the time of the request (RFC 8252 section 7.3, a MUST). The token request must repeat
    the URI with its port, which binds the code to it."""
    if uri in registered:
        return True
    portless = _without_loopback_port(uri)
    # A URI stored before registration checked it may not even parse (a broken IPv6 literal,
    # a port past 65535): it matches nothing, rather than failing the request.
    return portless != uri and any(
        _is_redirect_uri(r) and _without_loopback_port(r) == portless for r in registered
    )


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def register_client(
    conn: asyncpg.Connection,
    *,
    name: str,
    redirect_uris: list[str],
    scopes: list[str],
    is_confidential: bool,
    is_first_party: bool,
    admin_id: Any,
) -> RegisteredClient:
    """Register a client (an administrator's act, audited)."""
    unknown = sorted(set(scopes) - set(OAUTH_SCOPES) - set(CLIENT_PERMISSION_SCOPES))
    if unknown:
        raise _oauth_error("invalid_scope", f"unknown scopes: {', '.join(unknown)}")
    malformed = [uri for uri in redirect_uris if not _is_redirect_uri(uri)]
    if malformed:
        raise _oauth_error(
            "invalid_redirect_uri",
            "a redirect URI is absolute, with no fragment, and https (plain http only on"
            " 127.0.0.1 or [::1]) or a reverse-domain private-use scheme",
        )
    client_id = "cl_" + secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES) if is_confidential else None
    await repository.insert_client(
        conn,
        client_id=client_id,
        secret_hash=_secret_hash(secret) if secret else None,
        name=name[:CLIENT_NAME_LENGTH_MAX],
        redirect_uris=redirect_uris,
        allowed_scopes=scopes,
        is_first_party=is_first_party,
    )
    await record_event(
        conn,
        AuthEvent.OAUTH_CLIENT_REGISTERED,
        user_id=admin_id,
        client_id=client_id,
        is_confidential=is_confidential,
    )
    return RegisteredClient(client_id=client_id, client_secret=secret)


async def authenticate_client(
    conn: asyncpg.Connection, *, client_id: str | None, client_secret: str | None
) -> asyncpg.Record:
    """The client, if it exists and (when confidential) presented its secret."""
    if not client_id:
        raise OAuthClientError("client authentication failed", error="invalid_client")
    client = await repository.find_client(conn, client_id)
    if client is None:
        raise OAuthClientError("client authentication failed", error="invalid_client")
    stored = client["client_secret_hash"]
    if stored is not None and (
        client_secret is None or not hmac.compare_digest(stored, _secret_hash(client_secret))
    ):
        raise OAuthClientError("client authentication failed", error="invalid_client")
    return client


def _scopes(requested: str, allowed: list[str]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(requested.split()))
    if not scopes or not set(scopes) <= set(allowed):
        raise _oauth_error("invalid_scope", "the scope is not allowed for this client")
    return scopes


def _user_grantable(client: asyncpg.Record) -> list[str]:
    """The scopes a user may grant this client (its own permissions are not the user's)."""
    return [s for s in client["allowed_scopes"] if s not in CLIENT_PERMISSION_SCOPES]


async def authorize(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    request: AuthorizationRequest,
    claims: AccessClaims,
) -> str:
    """The redirect URL carrying a fresh code (or an error the client must see)."""
    client = await repository.find_client(conn, request.client_id)
    if (
        client is None
        # A stored URI that registration would refuse today is never redirected to.
        or not _is_redirect_uri(request.redirect_uri)
        or not _is_registered(request.redirect_uri, client["redirect_uris"])
    ):
        raise _oauth_error("invalid_request", "unknown client or unregistered redirect_uri")

    def redirect(**params: str | None) -> str:
        query = {k: v for k, v in params.items() if v is not None}
        query["iss"] = deps.settings.auth_issuer
        if request.state is not None:
            query["state"] = request.state
        # A registered query is kept and ours is added to it (RFC 6749 section 3.1.2).
        parts = urlsplit(request.redirect_uri)
        joined = "&".join(q for q in (parts.query, urlencode(query)) if q)
        return urlunsplit(parts._replace(query=joined))

    if request.response_type != "code":
        return redirect(error="unsupported_response_type")
    if request.code_challenge_method != "S256" or not request.code_challenge:
        return redirect(error="invalid_request", error_description="PKCE with S256 is required")
    if S256_CHALLENGE.fullmatch(request.code_challenge) is None:
        return redirect(error="invalid_request", error_description="malformed code_challenge")
    try:
        scopes = _scopes(request.scope, _user_grantable(client))
    except OAuthError:
        return redirect(error="invalid_scope")
    code = secrets.token_urlsafe(AUTHORIZATION_CODE_BYTES)
    now = deps.clock.now()
    await repository.insert_code(
        conn,
        code_hash=token_digest(code),
        client_id=request.client_id,
        user_id=claims.sub,
        redirect_uri=request.redirect_uri,
        scope=" ".join(scopes),
        code_challenge=request.code_challenge,
        nonce=request.nonce,
        amr=list(claims.amr),
        acr=claims.acr,
        auth_time=claims.auth_time,
        created_at=now,
        expires_at=now + timedelta(seconds=AUTHORIZATION_CODE_TTL_S),
    )
    await record_event(
        conn, AuthEvent.OAUTH_CODE_ISSUED, user_id=claims.sub, client_id=request.client_id
    )
    return redirect(code=code)


def _pkce_matches(verifier: str, challenge: str) -> bool:
    if not VERIFIER_LENGTH_MIN <= len(verifier) <= VERIFIER_LENGTH_MAX:
        return False
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    # As bytes: `compare_digest` refuses str with non-ASCII characters, and a stored challenge
    # is checked at authorization, not here.
    return hmac.compare_digest(computed.encode(), challenge.encode())


async def exchange_code(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    client: asyncpg.Record,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """The `authorization_code` grant."""
    now = deps.clock.now()
    row = await repository.lock_code(conn, token_digest(code)) if code else None
    if row is None or row["client_id"] != client["client_id"]:
        return Outcome(error=_oauth_error("invalid_grant", "the code is not valid"))
    if row["consumed_at"] is not None:
        if row["family_id"] is not None:
            # The session was made for this code alone: ending it kills the access token too.
            session_id = await repository.find_family_session(conn, row["family_id"])
            if session_id is not None:
                await deps.sessions.revoke(conn, row["user_id"], session_id)
            await refresh_tokens.revoke_family_by_id(
                conn, row["family_id"], reason=RevokeReason.CODE_REPLAYED, now=now
            )
        return Outcome(error=_oauth_error("invalid_grant", "the code was already used"))
    if row["expires_at"] <= now or row["redirect_uri"] != redirect_uri:
        return Outcome(error=_oauth_error("invalid_grant", "the code expired or redirect differs"))
    if not code_verifier or not _pkce_matches(code_verifier, row["code_challenge"]):
        return Outcome(error=_oauth_error("invalid_grant", "the code_verifier does not match"))
    # Under a share lock until the session below is committed: an administrator's lock either
    # came first and refuses the code here, or waits for this exchange and ends its session.
    user = await users.get_user_for_sign_in(conn, row["user_id"])
    if not user.is_active:
        return Outcome(error=_oauth_error("invalid_grant", "the code is not valid"))
    scope = tuple(row["scope"].split())
    grant = AuthGrant(
        user_id=user.id,
        amr=tuple(row["amr"]),
        auth_time=row["auth_time"],
        scope=scope,
        client_id=client["client_id"],
    )
    tokens = await issue_tokens(conn, deps, user=user, grant=grant, ctx=ctx)
    await repository.consume_code(conn, row["code_hash"], now=now, family_id=tokens.family_id)
    id_token = None
    if "openid" in scope:
        id_token = deps.signer.sign_id_token(
            user.id,
            client_id=client["client_id"],
            auth_time=row["auth_time"],
            amr=tuple(row["amr"]),
            acr=row["acr"],
            nonce=row["nonce"],
            email=user.email,
            is_email_verified=user.is_verified,
        )
    await record_event(
        conn,
        AuthEvent.LOGIN_SUCCEEDED,
        user_id=user.id,
        factor="oauth_code",
        client_id=client["client_id"],
        session_id=tokens.session_id,
    )
    return Outcome(value=_with_id_token(tokens, id_token))


def _with_id_token(tokens: IssuedTokens, id_token: str | None) -> IssuedTokens:
    return IssuedTokens(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        scope=tokens.scope,
        session_id=tokens.session_id,
        family_id=tokens.family_id,
        id_token=id_token,
    )


def _narrowed(requested: str, *, granted: tuple[str, ...]) -> tuple[str, ...]:
    """The asked subset of the grant, in the grant's order; `invalid_scope` beyond it."""
    asked = set(requested.split())
    if not asked or not asked <= set(granted):
        raise _oauth_error("invalid_scope", "the scope exceeds what was granted")
    return tuple(s for s in granted if s in asked)


async def refresh_grant(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    client: asyncpg.Record,
    token: str,
    scope: str | None = None,
) -> Outcome[IssuedTokens]:
    """The `refresh_token` grant (bound to the client the token was issued to).

    A `scope` (RFC 6749 section 6) narrows the new access token to a subset of the original
    grant; the refresh family keeps the original grant. The token is judged first (the scope
    is checked only for a token that rotated): another client's, or a used one (a replay,
    which ends its family), is `invalid_grant` whatever the scope, so a refusal never
    describes a grant to a stranger. A scope beyond the grant is raised as `invalid_scope`,
    so the transaction rolls the rotation back and nothing is consumed.
    """

    def narrow(granted: tuple[str, ...]) -> tuple[str, ...]:
        return granted if scope is None else _narrowed(scope, granted=granted)

    outcome = await refresh(conn, deps, token=token, client_id=client["client_id"], narrow=narrow)
    if outcome.error is not None or outcome.value is None:
        return Outcome(error=_oauth_error("invalid_grant", "the refresh token is not valid"))
    return outcome


async def revoke(
    conn: asyncpg.Connection, deps: AuthDependencies, *, client: asyncpg.Record, token: str
) -> None:
    """RFC 7009: end what the token grants, if it is this client's; silent otherwise."""
    now = deps.clock.now()
    described = await refresh_tokens.describe_any(conn, token=token)
    session_id: str | None = None
    user_id = None
    if described is not None and described["client_id"] == client["client_id"]:
        session_id, user_id = described["session_id"], described["user_id"]
    else:
        try:
            claims = deps.verifier.verify(token)
        except InvalidTokenError:
            return
        if claims.client_id == client["client_id"]:
            session_id, user_id = claims.sid, claims.sub
    if session_id is None or user_id is None:
        return
    await deps.sessions.revoke(conn, user_id, session_id)
    await refresh_tokens.revoke_session(
        conn, session_id, reason=RevokeReason.CLIENT_REVOKED, now=now
    )
    await record_event(
        conn,
        AuthEvent.OAUTH_TOKEN_REVOKED,
        user_id=user_id,
        client_id=client["client_id"],
        session_id=session_id,
    )


async def introspect(
    conn: asyncpg.Connection, deps: AuthDependencies, *, client: asyncpg.Record, token: str
) -> dict[str, Any]:
    """RFC 7662: whether the token is active, and its claims when it is.

    A client sees only tokens issued to itself (section 4), unless it holds the `introspect`
    permission; any other token answers as an unknown one does, so nothing about it leaks.
    """
    answer = await _describe_token(conn, deps, token=token)
    is_own = answer.get("client_id") == client["client_id"]
    if answer["active"] and not is_own and INTROSPECTION_SCOPE not in client["allowed_scopes"]:
        return {"active": False}
    return answer


async def _describe_token(
    conn: asyncpg.Connection, deps: AuthDependencies, *, token: str
) -> dict[str, Any]:
    try:
        claims = deps.verifier.verify(token)
    except InvalidTokenError:
        claims = None
    if claims is not None:
        # The verifier tolerates our replicas' clock skew; introspection answers on this
        # server's clock, so a token is never active past its own `exp` (RFC 7662 section 2.2).
        if claims.exp <= deps.clock.now() or await deps.sessions.get(claims.sid) is None:
            return {"active": False}
        return {
            "active": True,
            "token_type": "access_token",
            "scope": " ".join(sorted(claims.scope)),
            "client_id": claims.client_id,
            "sub": str(claims.sub),
            "aud": claims.aud,
            "iss": claims.iss,
            "exp": int(claims.exp.timestamp()),
            "iat": int(claims.iat.timestamp()),
            "nbf": int(claims.nbf.timestamp()),
            "jti": claims.jti,
            "sid": claims.sid,
        }
    row = await refresh_tokens.describe(conn, token=token, now=deps.clock.now())
    if row is None:
        return {"active": False}
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": row["scope"],
        "client_id": row["client_id"],
        "sub": str(row["user_id"]),
        "exp": int(row["expires_at"].timestamp()),
        "iat": int(row["created_at"].timestamp()),
        "sid": row["session_id"],
    }
