"""The S3 connector against moto's server mode: first sync, change, delete, unshare, a
broken and an oversized object, and a no-change sync that fetches nothing."""

from __future__ import annotations

import logging

import pytest
from connector_helpers import indexed, settings_with, texts

from ingest.connectors.sync import load_state, sync_source

SECRET = "moto-secret-key-s3-connector-77"


@pytest.fixture(scope="module")
def endpoint():
    moto_server = pytest.importorskip("moto.server")
    from lorebot.cli.stack import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _client(endpoint):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIAMOTOCONN",
        aws_secret_access_key=SECRET,
    )


def test_s3_sync_first_change_delete_broken(tmp_path, endpoint, embedder, parse_pool, caplog):
    s3 = _client(endpoint)
    s3.create_bucket(Bucket="handbook")
    s3.put_object(
        Bucket="handbook",
        Key="docs/leave.md",
        Body=b"# Leave\n\nStaff get 31 days of annual leave.\n",
    )
    s3.put_object(
        Bucket="handbook",
        Key="docs/travel.md",
        Body=b"# Travel\n\nBook trains through Trainline Corporate.\n",
    )
    s3.put_object(
        Bucket="handbook",
        Key="docs/eng/oncall.txt",
        Body=b"The on-call rota changes every Tuesday at noon.\n",
    )
    s3.put_object(
        Bucket="handbook", Key="docs/broken.pdf", Body=b"%PDF-1.7 this is not really a pdf"
    )
    s3.put_object(Bucket="handbook", Key="docs/huge.txt", Body=b"x" * (2 * 2**20))
    s3.put_object(Bucket="handbook", Key="other/secret.md", Body=b"# Outside the prefix\n")
    settings = settings_with(
        tmp_path,
        hb={
            "kind": "s3",
            "url": endpoint,
            "bucket": "handbook",
            "prefix": "docs/",
            "collection": "hr",
            "collections": {"eng/": "eng"},
            "username": "AKIAMOTOCONN",
            "secret": SECRET,
            "max_document_mb": 1,
        },
    )
    caplog.set_level(logging.DEBUG)
    first = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert first.fetched == 4 and first.built, first.to_dict()
    reasons = {f["id"]: f["reason"] for f in first.failures}
    assert reasons["docs/huge.txt"].startswith("too large")
    assert "docs/broken.pdf" in reasons  # the parser's reason, named by its key
    files = indexed(settings)
    assert {v["collection"] for v in files.values()} == {"hr", "eng"}
    assert "31 days" in texts(settings) and "Outside the prefix" not in texts(settings)

    # Nothing changed: listed, nothing fetched, no new version.
    again = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert again.fetched == 0 and again.unchanged == 4 and not again.built
    assert again.requests == 1  # one ListObjectsV2 page; no GetObject

    # A changed and a deleted object.
    s3.put_object(
        Bucket="handbook",
        Key="docs/leave.md",
        Body=b"# Leave\n\nStaff get 35 days of annual leave.\n",
    )
    s3.delete_object(Bucket="handbook", Key="docs/travel.md")
    third = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert third.fetched == 1 and third.deleted == 1 and third.built
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body and "Trainline" not in body
    assert "docs/travel.md" not in load_state(settings, "hb")["docs"]
    assert SECRET not in caplog.text  # the secret key never reaches a log line


def test_s3_listing_failure_deletes_nothing(tmp_path, endpoint):
    from ingest.connectors.base import SourceError

    settings = settings_with(
        tmp_path,
        gone={
            "kind": "s3",
            "url": endpoint,
            "bucket": "no-such-bucket",
            "collection": "hr",
            "username": "AKIAMOTOCONN",
            "secret": SECRET,
            "retries": 0,
        },
    )
    with pytest.raises(SourceError, match="NoSuchBucket"):
        sync_source(settings, "gone")
    assert load_state(settings, "gone")["last_error"].startswith("source gone")


def test_an_object_that_answers_access_denied_leaves_the_index():
    """A changed object whose GetObject is now refused is dropped (botocore's Stubber)."""
    import boto3
    from botocore.stub import Stubber

    from ingest.connectors.s3 import S3Connector
    from lorebot.settings import SourceConfig

    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    stub = Stubber(client)
    listing = {"Contents": [{"Key": "hr/pay.md", "ETag": '"e2"', "Size": 10}], "IsTruncated": False}
    stub.add_response("list_objects_v2", listing, {"Bucket": "b", "Prefix": ""})
    stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
    cfg = SourceConfig(kind="s3", bucket="b", collection="hr")

    class Sink:
        failures: list = []

        def known(self, doc_id):
            return (
                {"version": "e1", "collection": "hr", "path": doc_id} if "leave" in doc_id else None
            )

        def full(self):
            return False

        def unchanged(self, doc_id):
            pass

        def put(self, doc, data):
            raise AssertionError("nothing to store")

        def failed(self, doc_id, reason, gone=False):
            self.failures.append((doc_id, reason, gone))

    sink = Sink()
    with stub:
        S3Connector("b", cfg, client=client).sync(sink, {})
    assert sink.failures == [("hr/pay.md", "no longer readable: AccessDenied", True)]
