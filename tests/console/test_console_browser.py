"""The console in a real browser: headless Chromium (Debian's chromium + chromium-driver)
against `console.server` (uvicorn with the bot's guarded protocol) on a loopback port.

Sign-in, a forged CSRF token refused, and each page: status, access (map a channel),
sources (a re-index whose page updates itself through the console's script), answers
(correct a 👎 answer), models (promote with confirmation). Real Redis; the workers are a
fake gateway (tests/console/conftest.py). Screenshots go to the test's temporary folder,
or to $LOREBOT_CONSOLE_SCREENSHOTS when set (the README's come from there).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.console.conftest import INDEX_VERSION, PASSWORD, audit_lines
from tests.console.webdriver import Browser, browsers_present

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not browsers_present(),
        reason="needs Debian's chromium and chromium-driver (apt-get install both)",
    ),
]


@pytest.fixture()
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _shot(browser: Browser, tmp_path: Path, name: str) -> None:
    path = browser.screenshot(tmp_path / f"{name}.png")
    target = os.environ.get("LOREBOT_CONSOLE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_sign_in_csrf_and_every_page_in_chromium(
    served, browser, gateway, redis_client, console_settings, tmp_path
):
    from bot.state import ChannelAccess

    # no page without sign-in
    browser.get(served + "/models")
    assert "/login?next=/models" in browser.url
    _shot(browser, tmp_path, "login")
    browser.find("#login input[name=user]").type("admin")
    browser.find("#login input[name=password]").type("wrong")
    browser.find("#login button").click()
    assert "Wrong name or password" in browser.wait_for(".flash.error").text
    browser.find("#login input[name=user]").type("admin")
    browser.find("#login input[name=password]").type(PASSWORD)
    browser.find("#login button").click()
    browser.wait_for("#current-adapter")
    assert browser.url.endswith("/models")
    cookie = next(c for c in browser.cookies() if c["name"] == "__Host-lorebot-console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    _shot(browser, tmp_path, "models")

    # status
    browser.get(served + "/")
    assert browser.wait_for("#index-version").text == INDEX_VERSION
    _shot(browser, tmp_path, "status")

    # a forged CSRF token is refused and changes nothing
    access = ChannelAccess(redis_client, console_settings)
    browser.get(served + "/access")
    browser.script("document.querySelector('#map input[name=csrf_token]').value = 'forged'")
    browser.find("#map input[name=channel]").type("C0ENG")
    browser.find("#map input[name=collections]").type("eng")
    browser.find("#map button").click()
    browser.wait_text("refused: missing or wrong CSRF token")
    assert access.resolve("C0ENG", is_dm=False)[1] == ChannelAccess.NOT_MAPPED

    # access: map a channel
    browser.get(served + "/access")
    browser.find("#map input[name=channel]").type("C0ENG")
    browser.find("#map input[name=collections]").type("eng, handbook")
    browser.find("#map button").click()
    assert "Saved the mapping of C0ENG" in browser.wait_for(".flash.ok").text
    assert access.collections("C0ENG", is_dm=False) == ["eng", "handbook"]
    _shot(browser, tmp_path, "access")

    # sources: a re-index whose job page follows the task until it is done
    browser.get(served + "/sources")
    _shot(browser, tmp_path, "sources")

    def play(name, kwargs, queue, task_id=None):
        gateway.states[task_id] = [
            ("STARTED", None),
            (
                "SUCCESS",
                {
                    "status": "ok",
                    "message": "Index v2: 2 files ok, 1 failed",
                    "report": {
                        "counts": {"ok": 2, "failed": 1},
                        "files": [
                            {"path": "secret.pdf", "status": "failed", "reason": "encrypted"}
                        ],
                    },
                },
            ),
        ]
        gateway.sent.append((name, kwargs, queue, task_id))
        return task_id

    gateway.send = play
    browser.find("#reindex button").click()
    done = browser.wait_for(".job-state[data-state=SUCCESS]", timeout_s=20)
    assert "2 files ok, 1 failed" in done.text
    browser.wait_text("encrypted")
    _shot(browser, tmp_path, "job")

    # answers: correct a 👎 answer
    browser.get(served + "/answers")
    browser.find("#q-q2 textarea[name=answer]").type("25 days a year.")
    browser.find("#q-q2 button").click()
    assert "Saved the right answer" in browser.wait_for(".flash.ok").text
    _shot(browser, tmp_path, "answers")

    # models: promote, after the confirmation
    gateway.call_result = {
        "text": "promoted a20261201-020001-00a1",
        "current": "a20261201-020001-00a1",
    }
    browser.get(served + "/models")
    browser.find("#adapters a[href*=promote]").click()
    browser.wait_for("#confirm")
    browser.find("#confirm input[name=confirm]").click()
    browser.find("#confirm button").click()
    assert "promoted a20261201-020001-00a1" in browser.wait_for(".flash.ok").text

    # the audit log has every change, with who
    changes = [(e["action"], e["result"]) for e in audit_lines(console_settings)]
    for expected in (
        ("csrf", "refused"),
        ("channel.set", "ok"),
        ("reindex", "ok"),
        ("answer.correct", "ok"),
        ("adapters.promote", "ok"),
    ):
        assert expected in changes
    browser.get(served + "/audit")
    _shot(browser, tmp_path, "audit")
    browser.find(".signout button").click()
    browser.wait_for("#login")
    browser.get(served + "/")
    assert "/login" in browser.url


def test_sign_in_with_openid_connect_in_chromium(
    browser, console_settings, redis_client, gateway, tmp_path
):
    from pydantic import SecretStr

    from lorebot.cli.stack import free_port
    from tests.console.conftest import serve_console
    from tests.console.fake_oidc import CLIENT_ID, CLIENT_SECRET, FakeOidc

    provider = FakeOidc()
    port = free_port()
    base = f"http://localhost:{port}"
    s = console_settings.model_copy(
        update={
            "console": console_settings.console.model_copy(
                update={
                    "oidc_issuer": provider.url,
                    "oidc_client_id": CLIENT_ID,
                    "oidc_client_secret": SecretStr(CLIENT_SECRET),
                    "public_url": base,
                }
            ),
            "slack": console_settings.slack.model_copy(update={"admin_user_ids": ["U0ADMIN1"]}),
        }
    )
    server, thread = serve_console(s, redis_client, gateway, port)
    try:
        browser.get(base + "/access")
        browser.find("#oidc").click()  # to the provider, which consents and sends us back
        browser.wait_for("#channels")
        assert browser.url == base + "/access"
        assert browser.find("#who").text == "ada@example.com"
        browser.find(".signout button").click()
        browser.wait_for("#login")
        provider.claims = {"sub": "U0STAFF", "email": "bob@example.com"}
        browser.find("#oidc").click()
        assert "Only lorebot admins" in browser.wait_for(".flash.error").text
    finally:
        server.should_exit = True
        thread.join(10)
        provider.close()
