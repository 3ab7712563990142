"""Remote sources of documents, kept in sync incrementally: S3-compatible buckets, web
sites, Git repositories, Confluence spaces, SharePoint / OneDrive drives, Google Drive,
Notion.

Modules: base (the document record, the sink a connector reports to, secrets, safe
paths, retries), http (bounded HTTP requests with backoff), s3, web, git, confluence,
sharepoint, gdrive, notion (the connectors), sync (the engine: a source's state and mirror
folder, then the ordinary incremental build; the source registry of ``lorebot source
add``).
"""
