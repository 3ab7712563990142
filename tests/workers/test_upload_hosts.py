"""Shared files are downloaded with the bot token only from Slack's own file hosts.

Reliability promise (issue 14, item 16): a ``files.info`` answer whose download address
points anywhere but ``slack.file_hosts`` (Slack's hosts over https by default) or the
configured Web API's own origin is refused, and the token is never sent there.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lorebot.settings import Settings
from tests.support.fake_slack import FakeSlack

TOKEN = "xoxb-test-token"


class Recorder:
    """A local HTTP server that serves a small text file and records each request's headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                rec.seen.append((self.path, self.headers.get("Authorization")))
                body = b"The visitor badge is returned at the north desk.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def recorder():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture()
def fake_slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def settings_for(tmp_path, fake: FakeSlack, **slack) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        slack={"bot_token": TOKEN, "api_url": fake.api_url, **slack},
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_download_address_off_slacks_hosts_is_refused_and_gets_no_token(
    tmp_path, fake_slack, recorder, host
):
    from slack_sdk import WebClient

    from workers.tasks.uploads import ingest_files_impl

    info = fake_slack.add_file("F0EVIL", "badge.txt", b"x", mimetype="text/plain")
    fake_slack.files["F0EVIL"]["url_private_download"] = f"http://{host}:{recorder.port}/steal"
    fake_slack.files["F0EVIL"]["url_private"] = f"http://{host}:{recorder.port}/steal"
    settings = settings_for(tmp_path, fake_slack)
    out = ingest_files_impl(
        settings,
        collection="general",
        files=[info],
        web=WebClient(token=TOKEN, base_url=fake_slack.api_url),
    )
    (o,) = out["files"]
    assert o["status"] == "refused" and "not one of Slack's file hosts" in o["reason"], o
    assert recorder.seen == []  # not even a request, let alone the token


def test_a_configured_file_host_is_downloaded_with_the_token(tmp_path, fake_slack, recorder):
    """The other side: the recorder does see the token once its origin is configured."""
    from slack_sdk import WebClient

    from workers.tasks.uploads import Outcome, download_origins, fetch

    info = fake_slack.add_file("F0OK", "badge.txt", b"x", mimetype="text/plain")
    fake_slack.files["F0OK"]["url_private_download"] = f"http://127.0.0.1:{recorder.port}/ok"
    settings = settings_for(tmp_path, fake_slack, file_hosts=[f"http://127.0.0.1:{recorder.port}"])
    folder = tmp_path / "up"
    folder.mkdir()
    o = Outcome(file_id="F0OK", name=info["name"])
    web = WebClient(token=TOKEN, base_url=fake_slack.api_url)
    fetch(web, TOKEN, "F0OK", folder, 2**20, set(), o, download_origins(settings))
    assert o.stored_as == "badge.txt" and (folder / "badge.txt").read_bytes().startswith(b"The")
    assert recorder.seen == [("/ok", f"Bearer {TOKEN}")]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.pdf", True),
        ("https://files-edge.slack-edge.com/files-pri/T1-F1/a.pdf", True),
        ("https://files.slack.com:443/files-pri/T1-F1/a.pdf", True),
        ("https://slack.com/api/files.download", True),  # the Web API's own origin
        ("http://files.slack.com/files-pri/T1-F1/download/a.pdf", False),
        ("https://files.slack.com:8443/a.pdf", False),
        ("https://files.slack.com.evil.example/a.pdf", False),
        ("https://evil.example/files.slack.com/a.pdf", False),
        ("https://files.slack.com@evil.example/a.pdf", False),
        ("https://slack-edge.com.evil.example/a.pdf", False),
        ("https://evilslack-edge.com/a.pdf", False),
        ("javascript:alert(1)", False),
        ("", False),
    ],
)
def test_default_download_hosts_are_slacks_over_https(url, ok):
    from workers.tasks.uploads import download_allowed, download_origins

    assert download_allowed(url, download_origins(Settings())) is ok
