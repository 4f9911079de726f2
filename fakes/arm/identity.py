"""A Microsoft Entra ID stand-in: just enough OAuth2 for azure-identity and MSAL, unchanged.

* ``POST /{tenant}/oauth2/v2.0/token`` — the client-credentials grant with either a client secret
  (``ClientSecretCredential``) or a client assertion (``WorkloadIdentityCredential``,
  ``ClientAssertionCredential``: the federated service-account token read from a file).
* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` — what MSAL (the sync credentials)
  fetches before asking for a token. The async azure-identity credentials post to the token
  endpoint directly.
* ``GET /common/discovery/instance`` — MSAL's instance discovery, for clients that do not pass
  ``disable_instance_discovery=True`` but point it here.

Access tokens are JWTs signed with a per-server HMAC key, so ARM requests can be verified without
keeping a list; error answers use Entra's ``{"error", "error_description", "error_codes"}`` shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_AUDIENCE = "https://management.azure.com/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    tenant_id: str
    client_id: str
    audience: str
    expires_on: int
    object_id: str = ""


class TokenError(Exception):
    """A bearer token the fake ARM does not accept; ``code`` is ARM's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TokenIssuer:
    """Issues and verifies the access tokens of one server instance."""

    def __init__(self, lifetime: int = 3600, clients: dict[str, str] | None = None) -> None:
        self._key = secrets.token_bytes(32)
        self.lifetime = lifetime
        self.clients = dict(clients or {})

    def issue(
        self, issuer_base: str, tenant_id: str, client_id: str, audience: str = DEFAULT_AUDIENCE
    ) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "HS256", "kid": "fake-arm"}
        payload = {
            "aud": audience,
            "iss": f"{issuer_base}/{tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "appid": client_id,
            "azp": client_id,
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-arm:{tenant_id}:{client_id}")),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-arm:{tenant_id}:{client_id}")),
            "tid": tenant_id,
            "ver": "2.0",
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def verify(self, token: str) -> TokenClaims:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("InvalidAuthenticationToken", "The access token is invalid.")
        signing_input = f"{parts[0]}.{parts[1]}"
        expected = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        try:
            signature = _b64url_decode(parts[2])
            payload = json.loads(_b64url_decode(parts[1]))
        except (ValueError, binascii.Error):
            raise TokenError("InvalidAuthenticationToken", "The access token is invalid.") from None
        if not hmac.compare_digest(signature, expected):
            raise TokenError(
                "InvalidAuthenticationToken",
                "The access token is invalid: its signature does not match a token issued by this server.",
            )
        exp = int(payload.get("exp", 0))
        now = int(time.time())
        if exp <= now:
            raise TokenError(
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{_utc(exp)}' is earlier than current UTC time '{_utc(now)}'.",
            )
        return TokenClaims(
            tenant_id=str(payload.get("tid", "")),
            client_id=str(payload.get("appid", "")),
            audience=str(payload.get("aud", "")),
            expires_on=exp,
            object_id=str(payload.get("oid", "")),
        )


def _utc(epoch: int) -> str:
    return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(epoch))


def _aad_error(status: int, error: str, aadsts: int, description: str) -> web.Response:
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    body = {
        "error": error,
        "error_description": f"AADSTS{aadsts}: {description} Trace ID: {uuid.uuid4()} "
        f"Correlation ID: {uuid.uuid4()} Timestamp: {now}",
        "error_codes": [aadsts],
        "timestamp": now,
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return web.json_response(body, status=status)


def _audience(scope: str) -> str:
    first = scope.split()[0] if scope.strip() else DEFAULT_AUDIENCE
    resource = first.removesuffix("/.default").removesuffix(".default")
    return resource if resource.endswith("/") else resource + "/"


def _looks_like_jwt(value: str) -> bool:
    parts = value.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return False
    try:
        json.loads(_b64url_decode(parts[0]))
        json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return False
    return True


class IdentityRoutes:
    """aiohttp handlers of the token and discovery endpoints."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_post("/{tenant}/oauth2/token", self.token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration)
        app.router.add_get("/{tenant}/.well-known/openid-configuration", self.openid_configuration)
        app.router.add_get("/common/discovery/instance", self.instance_discovery)

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def openid_configuration(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        base = self._base(request)
        return web.json_response(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def instance_discovery(self, request: web.Request) -> web.Response:
        base = self._base(request)
        host = request.host
        return web.json_response(
            {
                "tenant_discovery_endpoint": f"{base}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        grant_type = str(form.get("grant_type", ""))
        client_id = str(form.get("client_id", ""))
        if grant_type != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        if not client_id:
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if assertion is not None:
            if form.get("client_assertion_type") != JWT_BEARER:
                return _aad_error(
                    400,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type; it must be "
                    "'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
                )
            if not _looks_like_jwt(str(assertion)):
                return _aad_error(
                    401, "invalid_client", 50027, "JWT token is invalid or malformed (client_assertion)."
                )
            if self.issuer.clients and client_id not in self.issuer.clients:
                return _aad_error(
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found.",
                )
        elif secret is not None:
            expected = self.issuer.clients.get(client_id)
            if self.issuer.clients and (expected is None or not hmac.compare_digest(str(secret), expected)):
                return _aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                    f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
        else:
            return _aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        audience = _audience(str(form.get("scope") or form.get("resource") or ""))
        token = self.issuer.issue(self._base(request), tenant, client_id, audience)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.issuer.lifetime,
                "ext_expires_in": self.issuer.lifetime,
                "access_token": token,
            }
        )


def check_bearer(request: web.Request, issuer: TokenIssuer) -> TokenClaims:
    """The claims of the request's bearer token; raises TokenError (→ ARM 401) otherwise."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise TokenError(
            "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )
    return issuer.verify(token.strip())


def unauthorized(request: web.Request, error: TokenError) -> web.Response:
    """ARM's 401: the error body plus a ``WWW-Authenticate`` challenge naming the authority."""
    base = f"{request.scheme}://{request.host}"
    challenge = (
        f'Bearer authorization_uri="{base}/common", error="invalid_token", '
        f'error_description="{error.message.replace(chr(34), chr(39))}"'
    )
    body: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})
