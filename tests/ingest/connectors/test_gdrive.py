"""The Google Drive connector against a local Drive API fake: a service-account key
(JWT checked by the fake), first walk with exports, a changes feed that brings an edit,
an unshared file and a new one, a 429 storm, and a bad key."""

from __future__ import annotations

import json
import logging

import pytest
from connector_helpers import settings_with, texts
from fake_drive import FakeDrive

from ingest.connectors.base import SourceError
from ingest.connectors.sync import load_state, sync_source


@pytest.fixture(scope="module")
def key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return private, pem


@pytest.fixture
def drive(key):
    with FakeDrive(key[0].public_key()) as d:
        d.put("doc1", "Leave policy", "application/vnd.google-apps.document",
              "<h1>Leave</h1><p>Staff get 31 days of annual leave.</p>")  # fmt: skip
        d.put("sheet1", "Per diem", "application/vnd.google-apps.spreadsheet",
              "city,allowance\nLondon,60 pounds a day\n")  # fmt: skip
        d.put("md1", "travel.md", "text/markdown", "# Travel\n\nBook trains through Trainline.\n")
        d.put("form1", "Survey", "application/vnd.google-apps.form", "")
        yield d


def test_drive_changes_feed(tmp_path, key, drive, embedder, parse_pool, caplog):
    caplog.set_level(logging.DEBUG)
    keyfile = tmp_path / "sa.json"
    account = {
        "type": "service_account",
        "client_email": "lorebot@p.iam.gserviceaccount.com",
        "private_key": key[1],
        "private_key_id": "k1",
    }
    keyfile.write_text(json.dumps(account, indent=2))
    settings = settings_with(
        tmp_path,
        gd={
            "kind": "gdrive",
            "url": drive.api,
            "token_url": drive.token_url,
            "secret_file": str(keyfile),
            "collection": "hr",
            "backoff_s": 0.01,
        },  # fmt: skip
    )
    drive.storm = 2
    first = sync_source(settings, "gd", embedder=embedder, pool=parse_pool)
    assert first.fetched == 3 and first.built and not first.failures, first.to_dict()
    body = texts(settings)
    assert "31 days" in body and "60 pounds" in body and "Trainline" in body
    assert load_state(settings, "gd")["cursor"]["page_token"] == "4"

    drive.calls.clear()
    same = sync_source(settings, "gd", embedder=embedder, pool=parse_pool)
    assert same.fetched == 0 and same.unchanged == 3 and not same.built
    assert not any("/export" in c or "alt=media" in c for c in drive.calls)

    drive.put("doc1", "Leave policy", "application/vnd.google-apps.document",
              "<h1>Leave</h1><p>Staff get 35 days of annual leave.</p>")  # fmt: skip
    drive.unshare("md1")
    drive.put("md2", "canteen.md", "text/markdown", "# Canteen\n\nIt opens at eight.\n")
    after = sync_source(settings, "gd", embedder=embedder, pool=parse_pool)
    assert after.fetched == 2 and after.deleted == 1 and after.unchanged == 1 and after.built
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body and "Trainline" not in body
    assert "opens at eight" in body
    assert key[1].splitlines()[1] not in caplog.text and "ya29.fake" not in caplog.text


def test_a_key_that_is_not_json_stops_the_sync(tmp_path, drive):
    keyfile = tmp_path / "sa.json"
    keyfile.write_text("not a key\n")
    settings = settings_with(
        tmp_path,
        gd={
            "kind": "gdrive",
            "url": drive.api,
            "token_url": drive.token_url,
            "secret_file": str(keyfile),
            "collection": "hr",
        },  # fmt: skip
    )
    with pytest.raises(SourceError, match="not a service account JSON key"):
        sync_source(settings, "gd")


def _hits(settings, embedder, email, question):
    from ingest import open_index
    from ingest.permissions import AskerRetriever, Permissions

    with open_index(settings, embedder=embedder) as reader:
        mask = Permissions(settings).for_index(reader).mask(email)
        return "\n".join(h.chunk.text for h in AskerRetriever(reader, mask).search(question, k=8))


def test_drive_viewers_groups_and_unsharing(tmp_path, key, drive, embedder, parse_pool):
    """Answer as the asker: each file's permissions (paged), group members through the
    directory (nested), and a file unshared from a user leaves that user's results at the
    next sync."""
    keyfile = tmp_path / "sa.json"
    account = {"client_email": "lorebot@p.iam.gserviceaccount.com", "private_key": key[1]}
    keyfile.write_text(json.dumps(account))
    secret = {"kind": "gdrive", "url": drive.api, "token_url": drive.token_url}
    settings = settings_with(
        tmp_path,
        gd=secret
        | {"secret_file": str(keyfile), "collection": "hr", "username": "admin@example.com"},
    )
    drive.put("pay1", "pay.md", "text/markdown", "# Pay\n\nThe pay review code is PAY-3391.\n",
              perms=[{"type": "user", "emailAddress": "ann@example.com"},
                     {"type": "user", "emailAddress": "Bo@example.com"},
                     {"type": "group", "emailAddress": "finance@example.com"}])  # fmt: skip
    drive.groups = {
        "finance@example.com": [{"email": "leads@example.com", "type": "GROUP"}],
        "leads@example.com": [{"email": "cy@example.com", "type": "USER"}],
    }
    first = sync_source(settings, "gd", embedder=embedder, pool=parse_pool)
    assert not first.failures, first.to_dict()
    state = load_state(settings, "gd")
    assert state["docs"]["pay1"]["acl"] == [
        ["group:finance@example.com", "user:ann@example.com", "user:bo@example.com"]
    ]
    assert drive.directory_subjects == ["admin@example.com"]
    q = "What is the pay review code?"
    for who in ("ann@example.com", "bo@example.com", "cy@example.com"):
        assert "PAY-3391" in _hits(settings, embedder, who, q), who
    assert "PAY-3391" not in _hits(settings, embedder, "dee@example.com", q)
    assert "31 days" in _hits(settings, embedder, "dee@example.com", "annual leave days")

    drive.calls.clear()
    drive.share("pay1", [{"type": "user", "emailAddress": "ann@example.com"}])
    after = sync_source(settings, "gd", embedder=embedder, pool=parse_pool)
    assert not after.failures, after.to_dict()
    assert "PAY-3391" in _hits(settings, embedder, "ann@example.com", q)
    for who in ("bo@example.com", "cy@example.com"):
        assert "PAY-3391" not in _hits(settings, embedder, who, q), who
