"""Git repositories through the ``git`` command: the documents of one branch, incremental
by commit.

A bare repository under the source's work folder is fetched (only new objects travel);
when the branch's commit is the one recorded last time nothing else happens. Otherwise
``git ls-tree`` lists every file with its blob id and size, and only blobs not seen
before are read (``git cat-file``). The ``git`` CLI because it speaks every transport
and credential setup a company uses, with no extra library.

A token never appears in a command line: git asks a credential helper, given in the
environment (``GIT_CONFIG_*``), that prints it from an environment variable of the git
process alone. Prompts are off, and only the https, ssh and file transports are allowed.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
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

#: Documents worth reading from a repository unless `include` says otherwise.
DOC_SUFFIXES = (
    ".md",
    ".markdown",
    ".rst",
    ".txt",
    ".adoc",
    ".html",
    ".htm",
    ".pdf",
    ".docx",
    ".pptx",
    ".xlsx",
    ".odt",
    ".rtf",
    ".org",
    ".csv",
    ".tsv",
    ".epub",
)

_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "${LOREBOT_GIT_USER:-git}" "$LOREBOT_GIT_SECRET"; }; f'
)


class GitConnector:
    """Mirror the documents of ``cfg.branch`` of the repository at ``cfg.url``."""

    def __init__(self, name: str, cfg: SourceConfig, workdir: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.repo = workdir / "repo.git"
        self.requests = 0  # fetches

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSH_AUTH_SOCK")
        }
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="true",
            GIT_CONFIG_NOSYSTEM="1",
            GIT_ALLOW_PROTOCOL="https:ssh:file",
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="credential.helper",
            GIT_CONFIG_VALUE_0=_HELPER,
        )
        secret = resolve_secret(self.cfg, self.name)
        if secret is not None:
            env["LOREBOT_GIT_SECRET"] = secret.get_secret_value()
            if self.cfg.username:
                env["LOREBOT_GIT_USER"] = self.cfg.username
        return env

    def _git(self, *args: str, env: dict[str, str], timeout: float | None = None) -> bytes:
        cmd = ["git", "--git-dir", str(self.repo), *args]
        limit = timeout or self.cfg.timeout_s
        try:
            done = subprocess.run(
                cmd,
                env=env,
                capture_output=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"source {self.name}: git {args[0]} timed out after {limit:g} s",
                fix="raise the source's timeout_s or check the network",
            ) from None
        except FileNotFoundError:
            raise SourceError(
                f"source {self.name}: the git command is not installed",
                fix="install git on the ingest worker",
            ) from None
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SourceError(
                f"source {self.name}: git {args[0]} failed: {(err[-1] if err else '?')[:200]}",
                fix="check the repository URL, the branch and the credentials",
            )
        return done.stdout

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        env = self._env()
        if not (self.repo / "HEAD").is_file():
            self.repo.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "--bare", "-q", str(self.repo)], env=env, check=True, timeout=60
            )
        ref = f"refs/lorebot/{self.cfg.branch}"
        # The URL comes from the source definition; never from argv with a secret in it.
        url = str(self.cfg.url)
        self.requests += 1
        # Fetch attempts: a dropped connection or a 5xx from the server is retried.
        for attempt in range(self.cfg.retries + 1):
            try:
                self._git(
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--depth=1",
                    "--",
                    url,
                    f"+refs/heads/{self.cfg.branch}:{ref}",
                    env=env,
                    timeout=max(self.cfg.timeout_s, 120),
                )
                break
            except SourceError as exc:
                if attempt == self.cfg.retries or "couldn't find remote ref" in exc.message:
                    raise
                log.info("%s; retry %d/%d", exc.message, attempt + 1, self.cfg.retries)
        commit = self._git("rev-parse", ref, env=env).decode().strip()
        rules = repr(
            (self.cfg.include, self.cfg.exclude, self.cfg.collection, self.cfg.collections)
        )
        if cursor.get("commit") == commit and cursor.get("rules") == rules:
            # Same commit: every document is as it was (nothing read).
            for doc_id in list(_known_ids(sink, cursor)):
                sink.unchanged(doc_id)
            return cursor
        tree = self._git("ls-tree", "-r", "-l", "-z", commit, env=env)
        limit = int(self.cfg.max_document_mb * 2**20)
        ids: list[str] = []
        for entry in tree.split(b"\0"):
            if not entry or sink.full():
                continue
            meta, _, raw_path = entry.partition(b"\t")
            mode, kind, blob, size = meta.decode().split()
            path = raw_path.decode("utf-8", "replace")
            if kind != "blob" or mode == "120000":  # submodules and links are not documents
                continue
            if not (self.cfg.include or path.lower().endswith(DOC_SUFFIXES)):
                continue
            if not wanted(self.cfg, path):
                continue
            ids.append(path)
            coll = collection_for(self.cfg, path)
            old = sink.known(path)
            if old and old["version"] == blob and old["collection"] == coll:
                sink.unchanged(path)
                continue
            if int(size) > limit:
                sink.failed(path, size_reason(int(size), self.cfg.max_document_mb))
                continue
            try:
                data = self._git("cat-file", "blob", blob, env=env)
            except SourceError as exc:
                sink.failed(path, exc.message)
                continue
            sink.put(Doc(path, blob, path, coll), data)
        return {"commit": commit, "rules": rules, "ids": ids}


def _known_ids(sink: Sink, cursor: dict[str, Any]) -> list[str]:
    return [i for i in cursor.get("ids") or [] if sink.known(i) is not None]
