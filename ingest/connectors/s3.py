"""S3-compatible buckets (AWS, MinIO, Ceph, R2...) with boto3: incremental by ETag.

Every sync lists the prefix (ListObjectsV2, 1,000 keys a page); an object whose ETag is
the one recorded last time is not fetched. boto3 because it is the reference client for
every S3-compatible store, and its "standard" retry mode already backs off on throttling
(429, SlowDown) and 5xx. A key that disappeared from the listing leaves the index; an
object that now answers AccessDenied is treated as unshared and leaves it too.
"""

from __future__ import annotations

import logging
from typing import Any

from ingest.connectors.base import (
    Doc,
    Sink,
    SourceError,
    collection_for,
    resolve_secret,
    size_reason,
    wanted,
)
from lorebot.settings import SourceConfig

log = logging.getLogger(__name__)

#: Error codes of GetObject that mean "no longer there or no longer ours to read".
GONE_CODES = {"NoSuchKey", "AccessDenied", "403", "404", "AllAccessDisabled"}


class S3Connector:
    """Mirror the objects under ``cfg.prefix`` of ``cfg.bucket``."""

    def __init__(self, name: str, cfg: SourceConfig, client: Any = None) -> None:
        self.name = name
        self.cfg = cfg
        self.requests = 0
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            secret = resolve_secret(self.cfg, self.name)
            kwargs: dict[str, Any] = {}
            if self.cfg.username and secret is not None:
                kwargs["aws_access_key_id"] = self.cfg.username
                kwargs["aws_secret_access_key"] = secret.get_secret_value()
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.cfg.url or None,
                region_name=self.cfg.region or "us-east-1",
                config=Config(
                    connect_timeout=self.cfg.timeout_s,
                    read_timeout=self.cfg.timeout_s,
                    retries={"max_attempts": self.cfg.retries + 1, "mode": "standard"},
                ),
                **kwargs,
            )
            self._client.meta.events.register("before-send.s3", self._count)
        return self._client

    def _count(self, **_: Any) -> None:
        self.requests += 1

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self.client()
        prefix = self.cfg.prefix.lstrip("/")
        limit = int(self.cfg.max_document_mb * 2**20)
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.cfg.bucket, Prefix=prefix
            )
            listing = (obj for page in pages for obj in page.get("Contents", []))
            for obj in listing:
                if sink.full():
                    break
                key = obj["Key"]
                rel = key[len(prefix) :].lstrip("/") if prefix else key
                if not rel or key.endswith("/") or not wanted(self.cfg, rel):
                    continue
                etag = str(obj.get("ETag", "")).strip('"')
                coll = collection_for(self.cfg, rel)
                old = sink.known(key)
                if old and old["version"] == etag and old["collection"] == coll:
                    sink.unchanged(key)
                    continue
                if obj.get("Size", 0) > limit:
                    sink.failed(key, size_reason(obj["Size"], self.cfg.max_document_mb))
                    continue
                self._fetch(s3, sink, Doc(key, etag, rel, coll), limit)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise SourceError(
                f"source {self.name}: cannot list s3://{self.cfg.bucket}/{prefix}: {code}",
                fix="check the bucket name, endpoint and the credentials' s3:ListBucket right",
            ) from None
        except BotoCoreError as exc:
            raise SourceError(
                f"source {self.name}: cannot reach the S3 endpoint: {type(exc).__name__}",
                fix="check sources.*.url (the endpoint) and the network",
            ) from None
        return {"listed_at_etags": True}

    def _fetch(self, s3: Any, sink: Sink, doc: Doc, limit: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = s3.get_object(Bucket=self.cfg.bucket, Key=doc.id, IfMatch=doc.version)
            body = resp["Body"]
            data = body.read(limit + 1)
            body.close()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            if code in GONE_CODES:
                sink.failed(doc.id, f"no longer readable: {code}", gone=True)
            elif code in ("PreconditionFailed", "412"):
                sink.failed(doc.id, "changed while syncing; fetched next sync")
            else:
                sink.failed(doc.id, f"S3 error: {code}")
            return
        except BotoCoreError as exc:
            sink.failed(doc.id, f"network error: {type(exc).__name__}")
            return
        if len(data) > limit:
            sink.failed(doc.id, size_reason(len(data), self.cfg.max_document_mb))
            return
        sink.put(doc, data)
