"""Sign-in with OpenID Connect (Slack, Google, Okta, Keycloak...), for admins only.

The authorization code flow with PKCE: ``/oidc/start`` keeps a random state, nonce and
code verifier in the session and sends the browser to the provider; ``/oidc/callback``
checks the state, exchanges the code at the token endpoint (back channel, with the
client secret and the verifier) and verifies the ID token: RS256 signature by a key of
the provider's JWKS, issuer, audience, expiry, and the nonce. Only then is the person
checked against ``slack.admin_user_ids`` (the ``sub`` claim, or Slack's
``https://slack.com/user_id``) or ``console.oidc_admin_group`` (the ``groups`` claim);
anyone else is refused, with an audit line.

The provider's discovery document and keys are fetched on first use and cached for an
hour (keys again at once when a token names an unknown key id). Every fetch has a short
timeout and a size cap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.auth import new_token, same_token
from lorebot.errors import ConfigError, LorebotError
from lorebot.settings import Settings

log = logging.getLogger(__name__)

CACHE_S = 3600
HTTP_TIMEOUT_S = 10
MAX_RESPONSE_BYTES = 256 << 10
#: How long a started sign-in may take at the provider.
FLOW_TTL_S = 600
CLOCK_SKEW_S = 60
SLACK_USER_CLAIM = "https://slack.com/user_id"


class OidcError(LorebotError):
    """The provider or its token could not be trusted, or the person is not an admin."""


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class OidcSignIn:
    """One configured provider; :meth:`routes` adds ``/oidc/start`` and ``/oidc/callback``."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        admin_ids: list[str],
        admin_group: str | None,
        http=None,
        clock=time.time,
    ) -> None:
        import requests

        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.admin_ids = set(admin_ids)
        self.admin_group = admin_group
        self.http = http or requests.Session()
        self.clock = clock
        self._lock = threading.Lock()
        self._config: tuple[float, dict[str, Any]] | None = None
        self._keys: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcSignIn:
        c = settings.console
        issuer = c.oidc_issuer or ""
        if not (issuer.startswith("https://") or _is_loopback_http(issuer)):
            raise ConfigError(
                f"console.oidc_issuer must be an https:// URL, not {issuer!r}",
                fix="set LOREBOT_CONSOLE__OIDC_ISSUER to the provider's issuer URL",
            )
        if not c.oidc_client_id or not c.public_url:
            raise ConfigError(
                "OpenID Connect sign-in needs console.oidc_client_id and console.public_url",
                fix="set LOREBOT_CONSOLE__OIDC_CLIENT_ID and LOREBOT_CONSOLE__PUBLIC_URL",
            )
        if not settings.slack.admin_user_ids and not c.oidc_admin_group:
            raise ConfigError(
                "OpenID Connect sign-in would let nobody in",
                fix="set slack.admin_user_ids or console.oidc_admin_group",
            )
        return cls(
            issuer=issuer,
            client_id=c.oidc_client_id,
            client_secret=c.oidc_client_secret.get_secret_value() if c.oidc_client_secret else None,
            redirect_uri=c.public_url.rstrip("/") + "/oidc/callback",
            admin_ids=list(settings.slack.admin_user_ids),
            admin_group=c.oidc_admin_group,
        )

    # -- provider documents ------------------------------------------------------------------
    def _get_json(self, url: str) -> dict[str, Any]:
        r = self.http.get(url, timeout=HTTP_TIMEOUT_S, allow_redirects=False, stream=True)
        body = r.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        r.close()
        if r.status_code != 200 or len(body) > MAX_RESPONSE_BYTES:
            raise OidcError(f"the identity provider answered {r.status_code} for {url}")
        try:
            data = json.loads(body)
        except ValueError:
            raise OidcError(f"the identity provider sent no JSON at {url}") from None
        if not isinstance(data, dict):
            raise OidcError(f"the identity provider sent no JSON object at {url}")
        return data

    def config(self) -> dict[str, Any]:
        with self._lock:
            if self._config and self.clock() - self._config[0] < CACHE_S:
                return self._config[1]
        conf = self._get_json(self.issuer + "/.well-known/openid-configuration")
        if str(conf.get("issuer", "")).rstrip("/") != self.issuer:
            raise OidcError("the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            url = str(conf.get(key) or "")
            if not (url.startswith("https://") or _is_loopback_http(url)):
                raise OidcError(f"the discovery document has no usable {key}")
        with self._lock:
            self._config = (self.clock(), conf)
        return conf

    def key(self, kid: str | None) -> Any:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

        for attempt in (0, 1):
            with self._lock:
                cached = self._keys
            if cached is None or attempt or self.clock() - cached[0] >= CACHE_S:
                jwks = self._get_json(self.config()["jwks_uri"])
                keys = {
                    k.get("kid"): k
                    for k in jwks.get("keys", [])
                    if isinstance(k, dict) and k.get("kty") == "RSA"
                }
                with self._lock:
                    self._keys = cached = (self.clock(), keys)
            jwk = cached[1].get(kid)
            if jwk is not None:
                n = int.from_bytes(_b64url_decode(jwk["n"]), "big")
                e = int.from_bytes(_b64url_decode(jwk["e"]), "big")
                return RSAPublicNumbers(e, n).public_key()
        raise OidcError("the ID token is signed by a key the provider does not publish")

    # -- the ID token ------------------------------------------------------------------------
    def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once signature, issuer, audience, time and nonce hold."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head_b64, body_b64, sig_b64 = id_token.split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(body_b64))
            signature = _b64url_decode(sig_b64)
        except (ValueError, TypeError):
            raise OidcError("the ID token is malformed") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OidcError("the ID token is malformed")
        if header.get("alg") != "RS256":
            raise OidcError(f"the ID token's algorithm {header.get('alg')!r} is not accepted")
        try:
            self.key(header.get("kid")).verify(
                signature,
                f"{head_b64}.{body_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise OidcError("the ID token's signature does not verify") from None
        now = self.clock()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        exp, iat = claims.get("exp"), claims.get("iat", 0)
        numbers = isinstance(exp, int | float) and isinstance(iat, int | float)
        problems = [
            (str(claims.get("iss", "")).rstrip("/") != self.issuer, "issuer"),
            (self.client_id not in auds, "audience"),
            (len(auds) > 1 and claims.get("azp") != self.client_id, "authorized party"),
            (not numbers or exp < now - CLOCK_SKEW_S, "expiry"),
            (not numbers or iat > now + CLOCK_SKEW_S, "issue time"),
            (not same_token(nonce, claims.get("nonce")), "nonce"),
            (not claims.get("sub"), "subject"),
        ]
        for bad, what in problems:
            if bad:
                raise OidcError(f"the ID token's {what} is wrong")
        return claims

    def admin_name(self, claims: dict[str, Any]) -> str | None:
        """The name the console knows this person by, when they are an admin; else None."""
        ids = {str(claims.get("sub")), str(claims.get(SLACK_USER_CLAIM) or "")}
        groups = claims.get("groups") or []
        in_group = (
            bool(self.admin_group) and isinstance(groups, list) and self.admin_group in groups
        )
        if not (ids & self.admin_ids) and not in_group:
            return None
        name = claims.get("email") or claims.get("preferred_username") or claims.get("sub")
        return str(name)[:64]

    # -- routes ------------------------------------------------------------------------------
    def routes(self, console) -> list[Route]:
        def start(request: Request) -> Response:
            from console.app import _safe_next

            try:
                conf = self.config()
            except Exception as exc:  # noqa: BLE001 - shown on the sign-in page, not raised
                log.warning("console: OIDC discovery failed: %s", exc)
                console.flash(request, "error", "The identity provider cannot be reached.")
                return RedirectResponse("/login", status_code=303)
            verifier = secrets.token_urlsafe(48)
            flow = {
                "state": new_token(),
                "nonce": new_token(),
                "verifier": verifier,
                "next": _safe_next(request.query_params.get("next")),
                "at": int(self.clock()),
            }
            request.session["oidc"] = flow
            query = urlencode(
                {
                    "response_type": "code",
                    "client_id": self.client_id,
                    "redirect_uri": self.redirect_uri,
                    "scope": "openid profile email",
                    "state": flow["state"],
                    "nonce": flow["nonce"],
                    "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
                    "code_challenge_method": "S256",
                }
            )
            return RedirectResponse(f"{conf['authorization_endpoint']}?{query}", status_code=303)

        def callback(request: Request) -> Response:
            flow = request.session.pop("oidc", None)  # one use: a replayed callback fails
            client = request.client.host if request.client else "?"
            p = request.query_params
            try:
                if not isinstance(flow, dict) or not same_token(flow.get("state"), p.get("state")):
                    raise OidcError("the sign-in's state does not match (start again)")
                if self.clock() - float(flow.get("at") or 0) > FLOW_TTL_S:
                    raise OidcError("the sign-in took too long (start again)")
                if p.get("error"):
                    raise OidcError(f"the identity provider refused: {p.get('error')[:100]}")
                code = p.get("code", "")
                if not code or len(code) > 2048:
                    raise OidcError("the identity provider sent no code")
                claims = self.verify(self._exchange(code, flow["verifier"]), flow["nonce"])
            except OidcError as exc:
                console.audit.record(
                    "-", "sign-in", result="refused", via="oidc", ip=client, reason=exc.message
                )
                console.flash(request, "error", f"Sign-in failed: {exc.message}.")
                return RedirectResponse("/login", status_code=303)
            name = self.admin_name(claims)
            if name is None:
                console.audit.record(
                    str(claims.get("sub"))[:64],
                    "sign-in",
                    result="refused",
                    via="oidc",
                    ip=client,
                    reason="not an admin",
                )
                console.flash(request, "error", "Only lorebot admins may use the console.")
                return RedirectResponse("/login", status_code=303)
            console.start_session(request, name, "oidc")
            console.audit.record(name, "sign-in", via="oidc", sub=str(claims.get("sub")), ip=client)
            return RedirectResponse(flow.get("next") or "/", status_code=303)

        return [
            Route("/oidc/start", start, methods=["GET"]),
            Route("/oidc/callback", callback, methods=["GET"]),
        ]

    def _exchange(self, code: str, verifier: str) -> str:
        import requests

        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            r = self.http.post(
                self.config()["token_endpoint"],
                data=data,
                auth=auth,
                timeout=HTTP_TIMEOUT_S,
                allow_redirects=False,
            )
            body = r.json() if len(r.content) <= MAX_RESPONSE_BYTES else {}
        except (requests.RequestException, ValueError) as exc:
            raise OidcError(f"the token request failed: {type(exc).__name__}") from None
        if r.status_code != 200 or not isinstance(body, dict) or "id_token" not in body:
            raise OidcError(f"the token endpoint answered {r.status_code}")
        return str(body["id_token"])
