"""Remote sources of documents, kept in sync incrementally: S3-compatible buckets, web
sites, Git repositories and Confluence spaces.

Modules: base (the document record, the sink a connector reports to, secrets, safe
paths, retries), http (one bounded HTTP GET with backoff), s3, web, git, confluence (the
connectors), sync (the engine: a source's state and mirror folder, then the ordinary
incremental build; the source registry of ``lorebot source add``).
"""
