"""Sign-in with OpenID Connect against a local provider (tests/console/fake_oidc.py)."""

from __future__ import annotations

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from tests.console.conftest import audit_lines, csrf_of
from tests.console.fake_oidc import CLIENT_ID, CLIENT_SECRET, FakeOidc


@pytest.fixture()
def provider():
    p = FakeOidc()
    yield p
    p.close()


@pytest.fixture()
def oidc_client(console_settings, redis_client, gateway, provider):
    from starlette.testclient import TestClient

    from console.app import build_app

    s = console_settings.model_copy(
        update={
            "console": console_settings.console.model_copy(
                update={
                    "oidc_issuer": provider.url,
                    "oidc_client_id": CLIENT_ID,
                    "oidc_client_secret": SecretStr(CLIENT_SECRET),
                    "oidc_admin_group": "lorebot-admins",
                    "public_url": "https://testserver",
                }
            ),
            "slack": console_settings.slack.model_copy(update={"admin_user_ids": ["U0ADMIN1"]}),
        }
    )
    app = build_app(s, redis=redis_client, gateway=gateway)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def oidc_sign_in(client, provider, next_path: str = "/models", tamper=None):
    r = client.get("/oidc/start", params={"next": next_path})
    assert r.status_code == 303
    assert r.headers["location"].startswith(provider.url + "/authorize?")
    back = requests.get(r.headers["location"], allow_redirects=False, timeout=5)
    assert back.status_code == 302
    callback = back.headers["location"].removeprefix("https://testserver")
    if tamper:
        callback = tamper(callback)
    return client.get(callback), callback


def test_an_admin_by_slack_user_id_signs_in(oidc_client, provider, console_settings):
    assert 'id="oidc"' in oidc_client.get("/login").text
    r, _ = oidc_sign_in(oidc_client, provider)
    assert r.status_code == 303 and r.headers["location"] == "/models"
    page = oidc_client.get("/models")
    assert page.status_code == 200 and "ada@example.com" in page.text
    last = [e for e in audit_lines(console_settings) if e["action"] == "sign-in"][-1]
    assert (last["who"], last["via"], last["sub"], last["result"]) == (
        "ada@example.com",
        "oidc",
        "U0ADMIN1",
        "ok",
    )


def test_a_member_of_the_admin_group_signs_in(oidc_client, provider):
    provider.claims = {"sub": "someone-else", "groups": ["staff", "lorebot-admins"]}
    r, _ = oidc_sign_in(oidc_client, provider)
    assert r.headers["location"] == "/models"
    assert oidc_client.get("/").status_code == 200


def test_anyone_else_is_refused(oidc_client, provider, console_settings):
    provider.claims = {"sub": "U0STAFF", "groups": ["staff"], "email": "bob@example.com"}
    r, _ = oidc_sign_in(oidc_client, provider)
    assert r.headers["location"] == "/login"
    assert "Only lorebot admins" in oidc_client.get("/login").text
    assert oidc_client.get("/").status_code == 303
    last = [e for e in audit_lines(console_settings) if e["action"] == "sign-in"][-1]
    assert (last["who"], last["result"], last["reason"]) == ("U0STAFF", "refused", "not an admin")


@pytest.mark.parametrize(
    ("misbehave", "reason"),
    [
        (lambda p: setattr(p, "sign_with", rsa.generate_private_key(65537, 2048)), "signature"),
        (lambda p: setattr(p, "alg", "none"), "algorithm"),
        (lambda p: p.claims.update(nonce="another"), "nonce"),
        (lambda p: p.claims.update(aud="another-client"), "audience"),
        (lambda p: p.claims.update(iss="https://evil.test"), "issuer"),
        (lambda p: p.claims.update(exp=1), "expiry"),
    ],
)
def test_a_token_that_does_not_verify_signs_nobody_in(
    oidc_client, provider, console_settings, misbehave, reason
):
    misbehave(provider)
    r, _ = oidc_sign_in(oidc_client, provider)
    assert r.headers["location"] == "/login"
    assert oidc_client.get("/").status_code == 303
    last = [e for e in audit_lines(console_settings) if e["action"] == "sign-in"][-1]
    assert last["result"] == "refused" and reason in last["reason"]


def test_a_wrong_state_or_a_replayed_callback_is_refused(oidc_client, provider):
    r, _ = oidc_sign_in(oidc_client, provider, tamper=lambda u: u.replace("state=", "state=x"))
    assert r.headers["location"] == "/login" and provider.token_requests == 0
    r, callback = oidc_sign_in(oidc_client, provider)
    assert r.headers["location"] == "/models"
    # the session is live; sign out and replay the same callback
    oidc_client.post("/logout", data={"csrf_token": csrf_of(oidc_client.get("/").text)})
    again = oidc_client.get(callback)
    assert again.headers["location"] == "/login"
    assert oidc_client.get("/").status_code == 303


def test_oidc_settings_are_checked_at_start(tmp_path):
    from console.oidc import OidcSignIn
    from lorebot.errors import ConfigError
    from tests.conftest import make_settings

    for console, match in (
        ({"oidc_issuer": "http://idp.example.com"}, "https://"),
        ({"oidc_issuer": "https://idp.example.com"}, "client_id"),
        (
            {
                "oidc_issuer": "https://idp.example.com",
                "oidc_client_id": "c",
                "public_url": "https://x",
            },
            "nobody",
        ),
    ):
        with pytest.raises(ConfigError, match=match):
            OidcSignIn.from_settings(make_settings(tmp_path, console=console))
