"""Files an admin shares in the admin channel are ingested into the collection named in
the message; reindex progress is one throttled thread message.

End to end: a signed ``message``/``file_share`` event → the bolt app over HTTP → Redis →
a real ``lorebot worker --queues ingest`` → files.info and the download from the fake
Slack → a new index version in which search finds the document in that collection → the
thread's reply edited into the progress and then the outcome.
"""

from __future__ import annotations

import time

import pytest

from tests.bot.conftest import (
    ADMIN,
    CHANNEL,
    USER,
    BotHarness,
    ephemerals,
    queued,
    reindex_in_thread,
    slack_settings_for,
)
from tests.conftest import make_settings
from tests.support.fake_slack import TEAM_ID

ADMIN_CHANNEL = "CADMINS01"
TOKEN = "xoxb-test-token"


def share(text: str, files: list[dict], *, user: str = ADMIN, channel: str = ADMIN_CHANNEL) -> dict:
    """A message event as Slack sends it when someone shares files with a comment."""
    return {
        "type": "message",
        "subtype": "file_share",
        "user": user,
        "text": text,
        "files": files,
        "upload": True,
        "ts": f"{time.time():.6f}",
        "channel": channel,
        "channel_type": "channel",
        "team": TEAM_ID,
    }


@pytest.fixture()
def upload_bot(tmp_path, redis_server, redis_client, fake_slack):
    from bot.app import build_app
    from bot.server import BotServer

    settings = slack_settings_for(
        tmp_path, redis_server.url, fake_slack.api_url, admin_channel=ADMIN_CHANNEL
    )
    app = build_app(settings, redis=redis_client)
    server = BotServer(app, redis_client, host="127.0.0.1", port=0).start()
    yield BotHarness(app, server, fake_slack, redis_client, settings)
    server.stop()


def thread_replies(fake, thread_ts: str):
    """The bot's chat.postMessage calls into a thread of the admin channel."""
    return [
        c
        for c in fake.calls_to("chat.postMessage")
        if c.args.get("channel") == ADMIN_CHANNEL and c.args.get("thread_ts") == thread_ts
    ]


def reply_ts(fake, thread_ts: str) -> str:
    """The ts of the one message the bot posted in that thread."""
    with fake._lock:
        (ts,) = [m.ts for m in fake.messages.values() if m.thread_ts == thread_ts]
    return ts


# ------------------------------------------------------------------ end to end
@pytest.mark.integration
def test_admin_share_is_downloaded_indexed_and_reported_in_its_thread(
    upload_bot, fake_slack, redis_server, celery_worker_proc, embedder, tmp_path
):
    from ingest import open_index
    from ingest.registry import load_sources

    data_dir = upload_bot.settings.data_dir
    files = [
        fake_slack.add_file(
            "F0GOOD001",
            "sabbatical.md",
            b"# Sabbatical leave\n\nAfter five years of service staff may take a paid "
            b"sabbatical of eight weeks, arranged with the Quokka committee.\n",
            mimetype="text/markdown",
            filetype="markdown",
        ),
        fake_slack.add_file(
            "F0BROKEN1",
            "broken.pdf",
            b"%PDF-1.4\n1 0 obj garbage, not a PDF at all\n",
            mimetype="application/pdf",
            filetype="pdf",
        ),
        fake_slack.add_file(
            "F0TRAVRS1",
            "../../../escaped/notes.txt",
            b"Bicycle storage: the cage behind the Heron building opens with your badge.\n",
            mimetype="text/plain",
            filetype="text",
        ),
        fake_slack.add_file(
            "F0HUGE001",
            "huge.txt",
            b"big words " * 8000,  # 80 kB > the 0.05 MB limit below
            mimetype="text/plain",
            filetype="text",
        ),
    ]
    celery_worker_proc(
        data_dir,
        redis_server.url,
        queues="ingest",
        LOREBOT_SLACK__BOT_TOKEN=TOKEN,
        LOREBOT_SLACK__API_URL=fake_slack.api_url,
        LOREBOT_INDEX__MAX_FILE_MB="0.05",
        LOREBOT_INDEX__PARSE_WORKERS="1",
    )
    event = share("New policies, collection: hr", files)
    assert upload_bot.event(event).status == 200

    ack = fake_slack.wait_for(lambda f: thread_replies(f, event["ts"]), what="the thread reply")[0]
    assert "4 files for collection `hr`" in ack.args["text"]
    ack_ts = reply_ts(fake_slack, event["ts"])
    final = fake_slack.wait_for(
        lambda f: (
            f.messages[(ADMIN_CHANNEL, ack_ts)].text.startswith(":warning: Indexed")
            and f.messages[(ADMIN_CHANNEL, ack_ts)]
        ),
        timeout=240,
        what="the outcome in the thread",
    )
    text = final.text
    # One message, edited: the progress, then the outcome (no flood of thread replies).
    assert len(thread_replies(fake_slack, event["ts"])) == 1
    edits = [c for c in fake_slack.calls_to("chat.update") if c.args["ts"] == ack_ts]
    assert any("Indexing 4 file(s) into collection `hr`" in c.args["text"] for c in edits[:-1])
    assert "Indexed 2 of 4 file(s) into collection `hr`" in text
    assert "`sabbatical.md`" in text
    assert "`broken.pdf`: not indexed (failed): corrupt: " in text  # the parser's reason
    assert "`huge.txt`: not indexed (refused): too large: 0.076 MB > 0.05 MB limit" in text
    assert "saved as `notes.txt`" in text

    # Fetched with the bot token, through files.info; the oversize file was never downloaded.
    downloads = fake_slack.calls_to("files.download")
    assert {c.args["file"] for c in downloads} == {"F0GOOD001", "F0BROKEN1", "F0TRAVRS1"}
    assert all(c.token == TOKEN for c in downloads)
    assert len(fake_slack.calls_to("files.info")) == 4

    # Stored safely under uploads/hr; the failed file is not kept, nothing escaped.
    folder = data_dir / "uploads" / "hr"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sabbatical.md"]
    assert not list(tmp_path.rglob("escaped"))
    settings = make_settings(data_dir, redis_server.url)
    assert [(s.path, s.collection) for s in load_sources(settings)] == [(folder, "hr")]

    # Search finds the document in that collection, and only there.
    with open_index(settings, embedder=embedder) as index:
        hits = index.search("How long is the paid sabbatical?", k=2, collections=["hr"])
        assert hits and hits[0].chunk.source == "sabbatical.md"
        assert hits[0].chunk.collection == "hr"
        assert not index.search("paid sabbatical Quokka", k=4, collections=["general"])
        bikes = index.search("Where do I store my bicycle?", k=1, collections=["hr"])
        assert bikes[0].chunk.source == "notes.txt"


# ------------------------------------------------------------------ bot edge only
def test_non_admin_share_gets_a_polite_refusal_and_nothing_is_queued(upload_bot, fake_slack):
    f = fake_slack.add_file("F0USER001", "mine.md", b"# hi\n", mimetype="text/markdown")
    assert upload_bot.event(share("collection: hr", [f], user=USER)).status == 200
    upload_bot.settle()
    told = ephemerals(fake_slack, USER)
    assert len(told) == 1 and "only lorebot admins" in told[0].args["text"]
    assert queued(upload_bot.redis, "ingest") == []
    assert not fake_slack.calls_to("files.info")


def test_share_without_a_collection_goes_to_the_default_and_says_so(upload_bot, fake_slack):
    f = fake_slack.add_file("F0DEF0001", "guide.md", b"# guide\n", mimetype="text/markdown")
    event = share("here is the new guide", [f])
    assert upload_bot.event(event).status == 200
    (task,) = upload_bot.wait_queued(1, queue="ingest")
    assert task["task"] == "lorebot.ingest_files"
    assert task["kwargs"]["collection"] == "general"
    assert task["kwargs"]["defaulted"] is True
    assert task["kwargs"]["files"] == [{"id": "F0DEF0001", "name": "guide.md"}]
    reply = task["kwargs"]["reply"]
    assert reply["thread_ts"] == event["ts"] and reply["channel"] == ADMIN_CHANNEL
    upload_bot.settle()
    (ack,) = thread_replies(fake_slack, event["ts"])
    assert "default one, `general`" in ack.args["text"]
    assert "collection: NAME" in ack.args["text"]


def test_bad_collection_name_is_refused_with_the_syntax(upload_bot, fake_slack):
    f = fake_slack.add_file("F0BAD0001", "x.md", b"# x\n", mimetype="text/markdown")
    assert upload_bot.event(share("collection: ../../etc", [f])).status == 200
    upload_bot.settle()
    (told,) = ephemerals(fake_slack, ADMIN)
    assert "`../../etc`" in told.args["text"] and "collection: NAME" in told.args["text"]
    assert queued(upload_bot.redis, "ingest") == []


def test_files_shared_elsewhere_are_not_ingested(upload_bot, fake_slack):
    f = fake_slack.add_file("F0ELSE001", "y.md", b"# y\n", mimetype="text/markdown")
    assert upload_bot.event(share("collection: hr", [f], channel=CHANNEL)).status == 200
    upload_bot.settle()
    assert queued(upload_bot.redis, "ingest") == []
    assert not ephemerals(fake_slack)


def test_a_redelivered_share_is_queued_once(upload_bot, fake_slack):
    f = fake_slack.add_file("F0ONCE001", "z.md", b"# z\n", mimetype="text/markdown")
    event = share("collection: hr", [f])
    upload_bot.event(event, event_id="EvSHARE1")
    upload_bot.event(event, event_id="EvSHARE2")  # same message, another envelope
    upload_bot.settle()
    assert len(queued(upload_bot.redis, "ingest")) == 1


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("text", "name", "problem"),
    [
        ("collection: hr", "hr", None),
        ("for Collection=Finance-2024.", "Finance-2024", None),
        ("collection: `it`", "it", None),
        ("collection: <#C0123ABC|handbook>", "handbook", None),
        ("collection: #hr", "hr", None),
        ("just the file", None, None),
        ("collection: ../etc", None, "../etc"),
        ("collection:", None, "(nothing)"),
    ],
)
def test_collection_syntax(text, name, problem):
    from bot.listeners.uploads import parse_collection

    choice = parse_collection(text)
    assert (choice.name, choice.problem) == (name, problem)


@pytest.mark.parametrize(
    ("shared", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".env", "env"),
        ("~$draft.docx", "draft.docx"),
        ("Résumé 2024.pdf", "Résumé 2024.pdf"),
        ("規程.txt", "規程.txt"),
        ("a:b|c?.md", "a_b_c_.md"),
        ("..", "file-F0X"),
        ("", "file-F0X"),
    ],
)
def test_safe_file_name_stays_in_its_folder_and_visible(shared, stored):
    from workers.tasks.uploads import safe_file_name

    assert safe_file_name(shared, "F0X") == stored


def test_safe_file_name_keeps_the_extension_of_a_very_long_name():
    from workers.tasks.uploads import MAX_NAME_CHARS, safe_file_name

    name = safe_file_name("x" * 400 + ".docx", "F1")
    assert len(name) == MAX_NAME_CHARS and name.endswith(".docx")


# ------------------------------------------------------------------ reindex progress
def test_stage_progress_edits_one_message_at_most_once_per_interval(fake_slack):
    from slack_sdk import WebClient

    from workers.tasks.ingest import StageProgress

    now = [100.0]
    web = WebClient(token=TOKEN, base_url=fake_slack.api_url)
    p = StageProgress(
        web, CHANNEL, "1.000", headline="Re-indexing", min_interval_s=3.0, clock=lambda: now[0]
    )
    p.start()
    for i in range(1, 51):  # 50 files parsed within the same instant: no update
        p("parse", i, 50)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert fake_slack.calls_to("chat.update") == []
    now[0] += 3.0
    p("embed", 64, 640)
    (upd,) = fake_slack.calls_to("chat.update")
    assert upd.args["ts"] == p.ts and "embedding 64/640 chunks (10%)" in upd.args["text"]

    fake_slack.rate_limit("chat.update", retry_after=30)
    now[0] += 3.0
    p("embed", 128, 640)  # 429: Slack asked for 30 s
    now[0] += 10.0
    p("embed", 192, 640)  # still inside Slack's Retry-After: not sent
    assert len(fake_slack.calls_to("chat.update")) == 1
    now[0] += 25.0
    p("write", 0, 1)
    assert "writing the new index version" in fake_slack.calls_to("chat.update")[-1].args["text"]
    p.finish("done in 12 s")  # always sent, however soon
    assert fake_slack.message(CHANNEL, p.ts).text == "Re-indexing\ndone in 12 s"
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


@pytest.mark.integration
def test_reindex_posts_stage_progress_in_one_thread_message(
    tmp_path, redis_server, redis_client, fake_slack, monkeypatch
):
    from ingest import Source
    from ingest.registry import record_sources
    from workers.tasks import ingest as ingest_tasks

    monkeypatch.setattr(ingest_tasks, "PROGRESS_INTERVAL_S", 0.0)  # every stage is seen
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nThe meeting room {i} has a projector.\n")
    settings = slack_settings_for(
        tmp_path, redis_server.url, fake_slack.api_url, admin_channel=ADMIN_CHANNEL
    )
    settings.index.parse_workers = 1
    record_sources(settings, [Source(docs, "facilities")])
    headline, result = reindex_in_thread(fake_slack, settings, ADMIN_CHANNEL, ADMIN, "facilities")
    assert result["status"] == "ok", result

    posted = thread_replies(fake_slack, headline["ts"])
    assert len(posted) == 1  # one progress message, edited in place
    progress_ts = reply_ts(fake_slack, headline["ts"])
    updates = fake_slack.calls_to("chat.update")
    seen = [c.args["text"] for c in updates if c.args["ts"] == progress_ts]
    assert any("parsing 3/3 files (100%)" in t for t in seen), seen
    assert any("embedding" in t for t in seen), seen
    assert any("writing the new index version" in t for t in seen), seen
    assert "done in" in fake_slack.message(ADMIN_CHANNEL, progress_ts).text
    assert "3 files ok" in fake_slack.message(ADMIN_CHANNEL, headline["ts"]).text
