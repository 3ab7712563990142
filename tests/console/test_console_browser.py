"""The console in a real browser: headless Chromium (Debian's chromium + chromium-driver)
against `console.server` (uvicorn with the bot's guarded protocol) on a loopback port,
with the suite's real redis-server and a real `lorebot worker` (ingest and control queues)
behind the console's real gateway.

One admin's session: sign-in (a wrong password first), the status page, a forged CSRF
token refused, the access page (map a channel, then reset it: the Redis hash
`/lorebot channel` reads), correcting a 👎 answer (read back where the gate's feedback
suite and the training pairs read it), a re-index whose job page follows the real
build from queued through its progress to done without a reload, promote and roll back
an adapter (the registry on disk changes), the audit log, and sign-out.

Screenshots go to the test's temporary folder, or to $LOREBOT_CONSOLE_SCREENSHOTS when
set; `bench/console_screenshots.py` makes the README's from a richer seeded run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess
from tests.console.conftest import INDEX_VERSION, PASSWORD, audit_lines, serve_console
from tests.console.webdriver import Browser, browsers_present

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not browsers_present(),
        reason="needs Debian's chromium and chromium-driver (apt-get install both)",
    ),
]

#: Records, in the page itself, every state the job page's live part has shown: the list
#: survives only as long as the page is not reloaded.
WATCH_JOB_STATES = """
window.jobStates = [document.querySelector('#job .job-state').dataset.state];
new MutationObserver(function () {
  var el = document.querySelector('#job .job-state');
  var seen = window.jobStates;
  if (el && seen[seen.length - 1] !== el.dataset.state) { seen.push(el.dataset.state); }
}).observe(document.getElementById('job'), {childList: true, subtree: true});
"""


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


class FreezeAtProgress:
    """Stops the worker's whole process group (SIGSTOP) at the task's first PROGRESS state.

    The Redis result backend publishes every state it stores on the task's channel. A
    build of two small files can pass its progress states between two polls of the page;
    frozen there, the page's poll cannot miss them, and :meth:`thaw` lets the build go on.
    """

    def __init__(self, redis_client, task_id: str) -> None:
        self.pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(f"celery-task-meta-{task_id}")
        self.pgid: int | None = None
        self.frozen = threading.Event()
        self.ended = threading.Event()  # frozen, or the task ended without a PROGRESS state
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self, pgid: int) -> None:
        self.pgid = pgid
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is None:
                continue
            state = json.loads(msg["data"])["status"]
            self.seen.append(state)
            if state == "PROGRESS" and not self.frozen.is_set() and self._signal(signal.SIGSTOP):
                self.frozen.set()
            if self.frozen.is_set() or state in ("SUCCESS", "FAILURE", "REVOKED"):
                self.ended.set()

    def _signal(self, sig: int) -> bool:
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:  # the worker is gone: its log tells why
            self.ended.set()
            return False

    def thaw(self) -> None:
        if self.frozen.is_set() and self.pgid is not None:
            self._signal(signal.SIGCONT)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.thaw()
        self.pubsub.close()


def _sign_in(browser: Browser, served: str, tmp_path: Path) -> None:
    browser.get(served + "/models")
    assert "/login?next=/models" in browser.url  # no page without sign-in
    _shot(browser, tmp_path, "login")
    browser.find("#login input[name=user]").type("admin")
    browser.find("#login input[name=password]").type("wrong")
    browser.find("#login button").click()
    assert "Wrong name or password" in browser.wait_for(".flash.error").text
    browser.find("#login input[name=user]").type("admin")
    browser.find("#login input[name=password]").type(PASSWORD)
    browser.find("#login button").click()
    browser.wait_for("#current-adapter")
    assert browser.url.endswith("/models")  # back to the page asked for
    cookie = next(c for c in browser.cookies() if c["name"] == "__Host-lorebot-console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"


def _access(browser: Browser, served: str, access, tmp_path: Path) -> None:
    from bot.state import ChannelAccess

    # a forged CSRF token is refused and changes nothing
    browser.get(served + "/access")
    browser.script("document.querySelector('#map input[name=csrf_token]').value = 'forged'")
    browser.find("#map input[name=channel]").type("C0ENG")
    browser.find("#map input[name=collections]").type("eng")
    browser.find("#map button").click()
    browser.wait_text("refused: missing or wrong CSRF token")
    assert access.resolve("C0ENG", is_dm=False)[1] == ChannelAccess.NOT_MAPPED

    browser.get(served + "/access")
    browser.find("#map input[name=channel]").type("C0ENG")
    browser.find("#map input[name=collections]").type("eng, handbook")
    browser.find("#map button").click()
    assert "Saved the mapping of C0ENG" in browser.wait_for(".flash.ok").text
    # what a question in C0ENG may now search, as the bot reads it
    assert access.collections("C0ENG", is_dm=False) == ["eng", "handbook"]
    row = browser.wait_for("#channels tr:has(form input[value=C0ENG])")
    assert "eng, handbook" in row.text
    _shot(browser, tmp_path, "access")
    row.find("button").click()
    browser.wait_text("C0ENG follows the settings again.")
    assert access.resolve("C0ENG", is_dm=False)[1] == ChannelAccess.NOT_MAPPED
    assert not browser.find_all("#channels tr:has(form input[value=C0ENG])")


def _correct(browser: Browser, served: str, settings, tmp_path: Path) -> None:
    from lorebot import feedback
    from slm.training.pairs import feedback_pairs

    browser.get(served + "/answers")
    card = browser.find("#q-q2")
    assert "case 2" in card.text and "down" in card.attr("class")
    card.find("textarea[name=answer]").type("25 days a year, plus public holidays.")
    card.find("button").click()
    assert "Saved the right answer" in browser.wait_for(".flash.ok").text
    _shot(browser, tmp_path, "answers")
    question = "How many days of leave, case 2?"
    right = "25 days a year, plus public holidays."
    # the gate's feedback suite reads it first, and training takes it as a correction
    assert feedback.liked_answers(settings)[0] == (question, right)
    assert feedback_pairs(settings)[0] == {"question": question, "answer": right}
    accepted = feedback.accepted_answers(settings)[0]
    assert (accepted["question"], accepted["answer"], accepted["kind"]) == (
        question,
        right,
        "correction",
    )


def test_every_page_against_a_real_worker_in_chromium(
    console_settings, redis_server, redis_client, browser, tmp_path
):
    from bot.state import ChannelAccess
    from ingest import store
    from lorebot.cli.stack import free_port
    from slm.training import registry

    s = console_settings
    # the folder the seed recorded for collection hr (include *.md), now with documents
    docs = Path(s.data_dir).parent / "docs-hr"
    (docs / "leave.md").write_text(
        "# Annual leave\n\nEvery employee gets 25 days of paid annual leave a year.\n"
    )
    (docs / "parking.md").write_text(
        "# Parking\n\nStaff parking is in the Heron garage; permits are renewed yearly.\n"
    )

    port = free_port()
    server, thread = serve_console(s, redis_client, None, port)  # the real WorkerGateway
    served = f"http://localhost:{port}"
    worker: WorkerProcess | None = None
    freeze: FreezeAtProgress | None = None
    try:
        _sign_in(browser, served, tmp_path)
        _shot(browser, tmp_path, "models")

        browser.get(served + "/")
        assert browser.wait_for("#index-version").text == INDEX_VERSION
        assert "reachable" in browser.find("#status").text  # the real Redis answered
        _shot(browser, tmp_path, "status")

        _access(browser, served, ChannelAccess(redis_client, s), tmp_path)
        _correct(browser, served, s, tmp_path)

        # re-index: sent while no worker listens, so the page starts at "queued"
        browser.get(served + "/sources")
        _shot(browser, tmp_path, "sources")
        browser.find("#reindex select option[value=hr]").click()
        browser.find("#reindex button").click()
        queued = browser.wait_for(".job-state[data-state=PENDING]")
        assert "queued (1 waiting on the ingest queue)" in queued.text
        task_id = re.search(r"/jobs/([^/?#]+)$", browser.url).group(1)
        browser.script(WATCH_JOB_STATES)

        freeze = FreezeAtProgress(redis_client, task_id)
        worker = WorkerProcess(
            s.data_dir,
            redis_server.url,
            tmp_path / "worker.log",
            "ingest,control",
            LOREBOT_METRICS__WORKER_PORT="0",
            LOREBOT_INDEX__PARSE_WORKERS="1",  # two files: one parser process is enough
            LOREBOT_MODEL_CACHE_DIR=os.environ["LOREBOT_MODEL_CACHE_DIR"],
        )
        freeze.start(worker.proc.pid)
        freeze.ended.wait(180)
        assert freeze.frozen.is_set(), f"no PROGRESS state: {freeze.seen}\n{worker.log()}"
        stored = json.loads(redis_client.get(f"celery-task-meta-{task_id}"))
        assert stored["status"] == "PROGRESS", stored
        running = browser.wait_for(".job-state[data-state=PROGRESS]")
        assert re.search(r"(parsing|embedding|writing)", running.text), running.text
        _shot(browser, tmp_path, "job-progress")
        freeze.thaw()
        done = browser.wait_for(".job-state[data-state=SUCCESS]", timeout_s=180)
        new_version = store.current_version(s)
        assert new_version != INDEX_VERSION
        assert f"Index {new_version}: 2 files ok" in done.text, done.text
        states = browser.script("return window.jobStates")
        assert states[0] == "PENDING" and states[-1] == "SUCCESS", states
        assert "PROGRESS" in states, states
        _shot(browser, tmp_path, "job")

        browser.get(served + "/")
        assert browser.wait_for("#index-version").text == new_version
        browser.get(served + "/sources?q=Parking")
        assert "parking.md" in browser.find("#documents").text

        # promote, then roll back, each after its confirmation, through the control queue
        assert registry.current_version(s) == "a20261201-020000-00a0"
        browser.get(served + "/models")
        browser.find("#adapters a[href*=promote]").click()
        browser.wait_for("#confirm")
        browser.find("#confirm input[name=confirm]").click()
        browser.find("#confirm button").click()
        assert "promoted a20261201-020001-00a1" in browser.wait_for(".flash.ok", 30).text
        assert registry.current_version(s) == "a20261201-020001-00a1"
        assert browser.find("#current-adapter").text == "a20261201-020001-00a1"
        browser.find("a[href*=rollback]").click()
        browser.wait_for("#confirm")
        browser.find("#confirm input[name=confirm]").click()
        browser.find("#confirm button").click()
        assert "rolled back to a20261201-020000-00a0" in browser.wait_for(".flash.ok", 30).text
        assert registry.current_version(s) == "a20261201-020000-00a0"
        assert browser.find("#current-adapter").text == "a20261201-020000-00a0"

        # the audit log has every change, with who
        changes = [(e["action"], e["result"], e["who"]) for e in audit_lines(s)]
        for action, result in (
            ("csrf", "refused"),
            ("channel.set", "ok"),
            ("channel.reset", "ok"),
            ("answer.correct", "ok"),
            ("reindex", "ok"),
            ("adapters.promote", "ok"),
            ("adapters.rollback", "ok"),
        ):
            assert any(c[:2] == (action, result) for c in changes), (action, changes)
        browser.get(served + "/audit")
        assert "adapters.rollback" in browser.find("#audit").text
        _shot(browser, tmp_path, "audit")
        browser.find(".signout button").click()
        browser.wait_for("#login")
        browser.get(served + "/")
        assert "/login" in browser.url
    finally:
        if freeze is not None:
            freeze.close()
        if worker is not None:
            worker.stop()
        server.should_exit = True
        thread.join(10)


def test_sign_in_with_openid_connect_in_chromium(
    browser, console_settings, redis_client, gateway, tmp_path
):
    from pydantic import SecretStr

    from lorebot.cli.stack import free_port
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
