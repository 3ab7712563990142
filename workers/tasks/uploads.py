"""Files an admin shares in the admin Slack channel, ingested on the `ingest` queue.

The bot hands over only file ids (never trusting names, sizes or URLs from the event);
this module asks Slack for each file (``files.info``) and downloads it with the bot token,
from Slack's own file hosts only (``slack.file_hosts``: any other address is refused
before a request is made). The download is size-limited, streamed, written under a hidden
temporary name and renamed into place (a concurrent build never sees half a file) in
``<data_dir>/uploads/<collection>/``; that folder is recorded as a source of the
collection and an incremental build runs under the same per-collection Redis lock as
``/lorebot reindex``. One thread message shows the progress and ends as the outcome: each
file indexed, or why not.

A file that does not end up in the index is deleted again, so the uploads folder holds
only indexed documents and later re-indexes do not report the same failure forever. A
file shared again under the same name replaces the earlier one.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lorebot import contracts, slack
from lorebot.contracts import COLLECTION_NAME
from lorebot.errors import IndexBusyError, IngestError, LorebotError
from lorebot.settings import Settings
from lorebot.types import new_id
from workers.tasks.ingest import StageProgress

log = logging.getLogger(__name__)

UPLOADS = "uploads"
#: How long an upload waits for a running re-index of its collection (or another build).
LOCK_WAIT_S = 30 * 60
BUILD_RETRY_S = 5.0
DOWNLOAD_TIMEOUT_S = 120.0
MAX_NAME_CHARS = 150
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


class UploadError(IngestError):
    """One shared file that could not be fetched; its message is the reason shown."""


@dataclass
class Outcome:
    """What happened to one shared file."""

    file_id: str
    name: str  # as shared
    stored_as: str | None = None  # safe name under uploads/<collection>/
    status: str = "pending"  # ok | unchanged | failed | skipped | refused
    reason: str | None = None
    chunks: int = 0

    @property
    def indexed(self) -> bool:
        return self.status in ("ok", "unchanged")


def uploads_dir(settings: Settings, collection: str) -> Path:
    return settings.data_dir / UPLOADS / collection


def check_collection(collection: str) -> str:
    """The collection name, if it is safe to use as a folder name (contracts.COLLECTION_NAME)."""
    if not isinstance(collection, str) or not re.fullmatch(COLLECTION_NAME, collection):
        raise IngestError(
            f"invalid collection name {collection!r}",
            fix="use letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return collection


def safe_file_name(name: str | None, file_id: str) -> str:
    """A file name that stays inside its folder and that discovery does not skip.

    Keeps non-ASCII letters (werkzeug's secure_filename would drop them and leave a
    Japanese or Cyrillic name empty), drops any directory part ("../../etc/passwd" →
    "passwd"), control and reserved characters, and the leading dots or "~$" that would
    make the file hidden or look like an Office lock file to discovery.
    """
    raw = unicodedata.normalize("NFC", str(name or ""))
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".~$- ").rstrip(". ")
    if len(base) > MAX_NAME_CHARS:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            base = stem[: MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            base = base[:MAX_NAME_CHARS]
    if not base:
        suffix = Path(raw.replace("\\", "/")).suffix
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else ""
        base = f"file-{re.sub(r'[^A-Za-z0-9]', '', file_id) or new_id()}{suffix}"
    return base


def _unique(name: str, taken: set[str]) -> str:
    """Two files of one share with the same name both survive ("a.pdf", "a-2.pdf")."""
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 2
    while True:
        candidate = f"{stem}-{n}" + (f".{ext}" if ext else "")
        if candidate not in taken:
            return candidate
        n += 1


def _mb(n: float) -> str:
    """Bytes as MB, precise enough to differ from a small limit ("0.08 MB > 0.05 MB")."""
    mb = n / 2**20
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb:.2g} MB"


def _limit(max_bytes: int) -> str:
    return f"{max_bytes / 2**20:.3g} MB limit"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL without credentials in it, else None."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def download_origins(settings: Settings) -> list[tuple[str, str, int]]:
    """Where shared files may be downloaded from with the bot token.

    ``slack.file_hosts`` (Slack's file hosts over https by default), plus the origin of
    ``slack.api_url``: every Web API call already carries the token there.
    """
    out = [o for o in map(_origin, settings.slack.file_hosts) if o]
    api = _origin(settings.slack.api_url)
    return out + ([api] if api else [])


def download_allowed(url: str, origins: list[tuple[str, str, int]]) -> bool:
    """Whether `url` lies on one of `origins` (a host ``*.example.com``: its subdomains)."""
    got = _origin(url or "")
    if got is None:
        return False
    scheme, host, port = got
    for o_scheme, o_host, o_port in origins:
        if (scheme, port) != (o_scheme, o_port):
            continue
        if host == o_host or (o_host.startswith("*.") and host.endswith(o_host[1:])):
            return True
    return False


def file_info(web, file_id: str) -> dict[str, Any]:
    """Slack's own record of the file (name, size, download URL), not the event's copy."""
    try:
        resp = web.files_info(file=file_id)
    except Exception as exc:
        data = getattr(getattr(exc, "response", None), "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        if code == "missing_scope":
            raise UploadError(
                "Slack refused files.info: the app lacks the files:read scope",
                fix="add files:read to the app (deploy/slack-manifest.yml) and reinstall it",
            ) from None
        raise UploadError(f"Slack could not describe the file ({code or exc})") from None
    info = resp.get("file") if hasattr(resp, "get") else None
    if not isinstance(info, dict):
        raise UploadError("Slack returned no file description")
    return info


def download(url: str, token: str, dest: Path, max_bytes: int, *, expect_html: bool) -> int:
    """Stream `url` into `dest` with the bot token; refuse more than `max_bytes`.

    requests drops the Authorization header on a redirect to another host, so the token
    never leaves Slack. Slack answers a request it will not authorise with its sign-in
    page (HTML, HTTP 200), which must not be indexed as the document.
    """
    import requests

    limit = _limit(max_bytes)
    try:
        with requests.get(
            url,
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=(10, DOWNLOAD_TIMEOUT_S),
        ) as resp:
            if resp.status_code != 200:
                raise UploadError(f"download failed: HTTP {resp.status_code} from Slack")
            ctype = resp.headers.get("Content-Type", "").lower()
            if "text/html" in ctype and not expect_html:
                raise UploadError(
                    "Slack sent its sign-in page instead of the file",
                    fix="give the app the files:read scope and reinstall it",
                )
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise UploadError(f"too large: {_mb(declared)} > {limit}")
            size = 0
            with open(dest, "wb") as fh:
                for block in resp.iter_content(chunk_size=1 << 16):
                    size += len(block)
                    if size > max_bytes:
                        raise UploadError(f"too large: more than the {limit}")
                    fh.write(block)
            return size
    except requests.RequestException as exc:
        raise UploadError(f"download failed: {type(exc).__name__}") from None


def fetch(
    web,
    token: str,
    file_id: str,
    folder: Path,
    max_bytes: int,
    taken: set[str],
    outcome: Outcome,
    origins: list[tuple[str, str, int]],
) -> None:
    """Describe, check and download one file into `folder`; fills in `outcome`.

    The bot token goes only to a download address on `origins` (download_origins).
    """
    info = file_info(web, file_id)
    outcome.name = info.get("name") or info.get("title") or outcome.name or file_id
    if info.get("is_external"):
        raise UploadError("a link to an external file, not a file stored in Slack")
    if info.get("mode") == "tombstone" or info.get("file_access") == "file_not_found":
        raise UploadError("the file was deleted before it could be fetched")
    size = int(info.get("size") or 0)
    if size > max_bytes:
        raise UploadError(f"too large: {_mb(size)} > {_limit(max_bytes)}")
    url = info.get("url_private_download") or info.get("url_private")
    if not url:
        raise UploadError("Slack gave no download address for the file")
    if not download_allowed(str(url), origins):
        where = (_origin(str(url)) or ("?", "an unusable address", 0))[1]
        raise UploadError(
            f"the download address ({where}) is not one of Slack's file hosts; "
            "the token was not sent",
            fix="add the host to LOREBOT_SLACK__FILE_HOSTS if it really is Slack's",
        )
    name = _unique(safe_file_name(outcome.name, file_id), taken)
    dest = folder / name
    if dest.resolve().parent != folder.resolve():  # belt and braces: safe_file_name did it
        raise UploadError("unsafe file name")
    part = folder / f".part-{new_id()}"
    html = (info.get("filetype") or "") in ("html", "htm") or "html" in (info.get("mimetype") or "")
    try:
        got = download(url, token, part, max_bytes, expect_html=html)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    taken.add(name)
    outcome.stored_as = name
    log.info("upload file=%s stored as %s (%d bytes)", file_id, dest, got)


def _build(settings: Settings, sources, progress: StageProgress | None):
    """build_index, waiting (bounded) while another build holds the index's build lock."""
    from ingest import build_index

    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return build_index(settings, sources, progress=False, on_progress=progress)
        except IndexBusyError:
            if time.monotonic() > deadline:
                raise
            if progress:
                progress.report("waiting for another index build to finish…")
            time.sleep(BUILD_RETRY_S)


def summary_text(
    collection: str, outcomes: list[Outcome], report, *, defaulted: bool, error: str | None
) -> str:
    """The thread's final word: per shared file indexed or why not, then the run's table."""
    n_ok = sum(o.indexed for o in outcomes)
    where = f"collection `{collection}`" + (" (the default collection)" if defaulted else "")
    if error:
        head = f":warning: Indexing into {where} stopped: {error}"
    elif n_ok == len(outcomes):
        head = f":white_check_mark: Indexed {n_ok} of {len(outcomes)} file(s) into {where}"
    elif n_ok:
        head = f":warning: Indexed {n_ok} of {len(outcomes)} file(s) into {where}"
    else:
        head = f":x: None of the {len(outcomes)} file(s) could be indexed into {where}"
    if report is not None and report.version and not error:
        head += f"; index `{report.version}`."
    lines = [head]
    for o in outcomes:
        shown = o.stored_as or o.name
        if o.indexed:
            renamed = o.stored_as and o.stored_as != o.name
            extra = f" (saved as `{o.stored_as}`)" if renamed else ""
            same = ", unchanged" if o.status == "unchanged" else ""
            lines.append(f"• `{o.name}`{extra}: {o.chunks} chunk(s){same}")
        else:
            lines.append(f"• `{shown}`: not indexed ({o.status}): {o.reason or 'no reason given'}")
    if report is not None and report.files:
        from rich.console import Console

        console = Console(width=96, record=True, file=_Null(), color_system=None)
        console.print(report.table())
        table = console.export_text(styles=False).strip()
        if len(table) <= 2400:
            lines.append("```\n" + table + "\n```")
        else:
            lines.append(report.summary())
    return "\n".join(lines)


class _Null:
    """A file that swallows output (rich records what it would have printed)."""

    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def ingest_files_impl(
    settings: Settings,
    *,
    collection: str,
    files: list[dict[str, Any]],
    reply: contracts.ReplyTarget | dict | None = None,
    defaulted: bool = False,
    web=None,
) -> dict[str, Any]:
    """Download the shared files, index them into `collection`, report in the thread."""
    import redis

    from ingest import Source
    from ingest.registry import record_sources

    delivery = progress = None
    outcomes = [
        Outcome(file_id=str(f.get("id") or ""), name=str(f.get("name") or f.get("id") or "?"))
        for f in files
        if isinstance(f, dict)
    ]
    report = None
    error: str | None = None
    lock = None
    try:
        if web is None:
            web = slack.web_client(
                settings,
                timeout=30,
                need="shared files cannot be downloaded",
                fix="set LOREBOT_SLACK__BOT_TOKEN=xoxb-… for the ingest worker",
            )
        if reply:
            from workers.delivery import SlackDelivery

            delivery = SlackDelivery(web, reply)
            progress = StageProgress(
                web,
                delivery.channel,
                delivery.reply.thread,
                headline=f"Indexing {len(outcomes)} file(s) into collection `{collection}`…",
                ts=delivery.ts,
            )
        check_collection(collection)
        folder = uploads_dir(settings, collection)
        folder.mkdir(parents=True, exist_ok=True)
        token = settings.slack.bot_token.get_secret_value() if settings.slack.bot_token else ""
        max_bytes = int(settings.index.max_file_mb * 2**20)
        origins = download_origins(settings)
        taken: set[str] = set()
        for i, o in enumerate(outcomes, start=1):
            if progress:
                progress.report(f"downloading {i}/{len(outcomes)} file(s)")
            try:
                fetch(web, token, o.file_id, folder, max_bytes, taken, o, origins)
            except UploadError as exc:
                o.status, o.reason = "refused", exc.message
                log.info("upload file=%s (%s) refused: %s", o.file_id, o.name, exc.message)
        stored = [o for o in outcomes if o.stored_as]
        if stored:
            r = redis.Redis.from_url(settings.redis.effective_url)
            lock = r.lock(
                contracts.reindex_lock(collection),
                timeout=contracts.REINDEX_LOCK_TTL_S,
                blocking=True,
            )
            if not lock.acquire(blocking=False):
                if progress:
                    progress.report(f"waiting for the running re-index of `{collection}`…")
                if not lock.acquire(blocking=True, blocking_timeout=LOCK_WAIT_S):
                    lock = None
                    raise IngestError(
                        f"a re-index of {collection} kept the collection busy",
                        fix=f"the files are saved: run `/lorebot reindex {collection}` later",
                    )
            sources = [Source(path=folder, collection=collection)]
            record_sources(settings, sources)
            try:
                report = _build(settings, sources, progress)
            except IngestError as exc:
                report = getattr(exc, "report", None)
                if report is None:
                    raise
            by_name = {f.path: f for f in report.files if f.collection == collection}
            for o in stored:
                res = by_name.get(o.stored_as or "")
                if res is None:
                    o.status, o.reason = "failed", "not found by the build"
                else:
                    o.status, o.reason, o.chunks = res.status, res.reason, res.chunks
                if not o.indexed:
                    (folder / (o.stored_as or "")).unlink(missing_ok=True)
    except LorebotError as exc:
        error = exc.one_line()
        log.warning("upload collection=%s failed: %s", collection, error)
    except Exception as exc:
        ref = new_id()
        error = f"internal error ({type(exc).__name__}), reference `{ref}`"
        log.exception("upload collection=%s ref=%s unexpected error", collection, ref)
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception as exc:  # expired or Redis gone: the TTL frees it
                log.warning("upload collection=%s: lock release failed: %s", collection, exc)
    for o in outcomes:
        if o.status == "pending":
            o.status, o.reason = "failed", error or "not processed"
    text = summary_text(collection, outcomes, report, defaulted=defaulted, error=error)
    if delivery:
        delivery.update(text)
    ok = sum(o.indexed for o in outcomes)
    log.info(
        "upload collection=%s files=%d indexed=%d version=%s",
        collection,
        len(outcomes),
        ok,
        getattr(report, "version", None),
    )
    return {
        "status": "failed" if error or not ok else "ok",
        "collection": collection,
        "version": getattr(report, "version", None),
        "message": text,
        "files": [asdict(o) for o in outcomes],
    }


def register(app: Any, settings: Settings) -> None:
    """Register the ``ingest_files`` task (ingest queue) on ``app``, with the builds' time limit."""
    from workers.tasks.ingest import TASK_TIME_LIMIT_S

    @app.task(
        name=contracts.TASK_INGEST_FILES,
        shared=False,
        time_limit=TASK_TIME_LIMIT_S,
        soft_time_limit=TASK_TIME_LIMIT_S - 60,
    )
    def ingest_files(
        collection: str, files: list, reply: dict | None = None, defaulted: bool = False
    ) -> dict:
        return ingest_files_impl(
            settings, collection=collection, files=files, reply=reply, defaulted=defaulted
        )
