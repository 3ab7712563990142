"""Durable 👍 / 👎 feedback: one SQLite file in the data directory, exported as JSONL.

SQLite in WAL mode with full synchronous commits: a click that Slack saw acknowledged
survives a crash, several bot processes on one host can write at once, and the nightly
evaluation reads the store without talking to Slack. One row per (question, user): a
user who changes their mind replaces their vote.

The table, its schema and every query of it live here: the bot records votes
(:class:`FeedbackStore`), ``lorebot feedback export`` writes them out
(:func:`export_jsonl`) and the nightly refresh reads the answers users liked
(:func:`liked_answers`). The admin console lists votes newest and 👎 first
(:meth:`FeedbackStore.recent`) and stores an admin's right answer to a question
(:meth:`FeedbackStore.correct`); corrections come first in :func:`liked_answers`, so they
join the gate's feedback suite, and :func:`corrections` hands them to training.

A user who clicks 👎 may suggest the right answer (the bot's modal,
:meth:`FeedbackStore.suggest`): the suggestion is kept with its provenance (who, when, the
question, the answer shown, the index and adapter versions) in the ``review`` table, bounded
in length and in how many may wait, until an admin decides on it (``lorebot feedback review``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lorebot.errors import ConfigError, LorebotError
from lorebot.settings import Settings

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    question_id   TEXT NOT NULL,
    user          TEXT NOT NULL,
    vote          INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    channel       TEXT,
    team          TEXT,
    message_ts    TEXT,
    question      TEXT,
    answer        TEXT,
    citations     TEXT NOT NULL DEFAULT '[]',
    abstained     INTEGER,
    index_version TEXT,
    adapter       TEXT,
    created_at    REAL NOT NULL,
    latency_ms    REAL,
    short_answer  TEXT,
    PRIMARY KEY (question_id, user)
);
CREATE INDEX IF NOT EXISTS feedback_vote_time ON feedback (vote, created_at DESC);
CREATE TABLE IF NOT EXISTS corrections (
    question_id   TEXT PRIMARY KEY,
    question      TEXT NOT NULL,
    answer        TEXT NOT NULL,
    admin         TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS review (
    question_id TEXT NOT NULL,
    user        TEXT NOT NULL,
    suggestion  TEXT,
    decision    TEXT NOT NULL DEFAULT 'pending'
                CHECK (decision IN ('pending', 'accepted', 'rejected')),
    answer      TEXT,
    reviewer    TEXT,
    reviewed_at REAL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (question_id, user)
);
"""
#: Provenance a suggestion keeps of the answer it corrects, copied from the vote when it is
#: made (a later vote or an expired answer does not change what the suggestion was about).
REVIEW_PROVENANCE = (
    ("question", "TEXT"),
    ("shown_answer", "TEXT"),
    ("index_version", "TEXT"),
    ("adapter", "TEXT"),
    ("channel", "TEXT"),
    ("source", "TEXT"),
)
#: Longest suggested answer kept (the modal's input says the same to Slack).
MAX_SUGGESTION_CHARS = 1000
#: Suggestions that may wait for review, per user and in all; past them new ones are refused
#: (an unreviewed queue must not grow without end, nor one user fill it).
MAX_PENDING_PER_USER = 50
MAX_PENDING = 5000

#: What ``lorebot feedback review`` writes for each vote awaiting review, and reads back.
REVIEW_FIELDS = (
    "question_id", "user", "vote", "question", "answer", "suggestion", "decision", "reviewer",
    "suggested_at", "index_version", "adapter",
)  # fmt: skip

COLUMNS = (
    "question_id",
    "user",
    "vote",
    "channel",
    "team",
    "message_ts",
    "question",
    "answer",
    "citations",
    "abstained",
    "index_version",
    "adapter",
    "created_at",
    "latency_ms",
    "short_answer",
)


class FeedbackReadError(LorebotError):
    """The feedback file exists but cannot be read (corrupt, locked, not SQLite)."""


class ReviewQueueFull(LorebotError):
    """Too many suggestions wait for review (this user's, or everyone's)."""


def feedback_path(settings: Settings) -> Path:
    return settings.data_dir / "feedback.sqlite"


class FeedbackStore:
    """Append-or-replace votes; safe to share between the bot's listener threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                # Stores from before the answer's latency was kept get the column (empty).
                have = {row[1] for row in db.execute("PRAGMA table_info(feedback)")}
                if "latency_ms" not in have:
                    db.execute("ALTER TABLE feedback ADD COLUMN latency_ms REAL")
                # ... and before read-mode answers kept their short answer apart.
                if "short_answer" not in have:
                    db.execute("ALTER TABLE feedback ADD COLUMN short_answer TEXT")
                # Stores from before suggestions kept their provenance get the columns.
                have = {row[1] for row in db.execute("PRAGMA table_info(review)")}
                for name, kind in REVIEW_PROVENANCE:
                    if name not in have:
                        db.execute(f"ALTER TABLE review ADD COLUMN {name} {kind}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the feedback database {path}: {exc}",
                fix="make LOREBOT_DATA_DIR a writable directory",
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def record(
        self,
        *,
        question_id: str,
        user: str,
        vote: int,
        channel: str | None,
        team: str | None,
        message_ts: str | None,
        answer: dict[str, Any] | None,
        created_at: float | None = None,
    ) -> None:
        """Store one vote (+1 / -1) with the answer it is about (an ``Answer`` dict)."""
        if vote not in (-1, 1):
            raise ValueError("vote must be +1 or -1")
        a = answer or {}
        total = (a.get("timings_ms") or {}).get("total")
        row = (
            question_id,
            user,
            vote,
            channel,
            team,
            message_ts,
            a.get("question"),
            a.get("answer"),
            json.dumps(a.get("citations") or [], ensure_ascii=False),
            None if "abstained" not in a else int(bool(a["abstained"])),
            a.get("index_version"),
            a.get("adapter"),
            created_at if created_at is not None else time.time(),
            float(total) if isinstance(total, int | float) else None,
            a.get("short_answer") or None,
        )
        marks = ",".join("?" * len(COLUMNS))
        with self._lock, closing(self._connect()) as db, db:
            db.execute(
                f"INSERT OR REPLACE INTO feedback ({','.join(COLUMNS)}) VALUES ({marks})", row
            )
        log.info("feedback question=%s user=%s vote=%+d", question_id, user, vote)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every vote, oldest first, as plain dicts (citations decoded)."""
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            for r in db.execute(
                f"SELECT {','.join(COLUMNS)} FROM feedback ORDER BY created_at, rowid"
            ):
                d = dict(r)
                d["citations"] = json.loads(d["citations"] or "[]")
                d["abstained"] = None if d["abstained"] is None else bool(d["abstained"])
                d["created_at"] = datetime.fromtimestamp(d["created_at"], tz=UTC).isoformat()
                yield d

    def suggest(
        self,
        *,
        question_id: str,
        user: str,
        suggestion: str,
        created_at: float | None = None,
        source: str = "slack",
        max_pending_per_user: int = MAX_PENDING_PER_USER,
        max_pending: int = MAX_PENDING,
    ) -> bool:
        """Store a user's suggested right answer to a question they voted on (the 👎
        modal); it waits for an admin's review before anything learns from it.

        The vote's question, answer, channel and versions are copied beside it. False when
        the user has no vote on ``question_id`` (nothing to attach it to); ``ValueError``
        for an empty suggestion or one over :data:`MAX_SUGGESTION_CHARS`;
        :class:`ReviewQueueFull` when too many wait already. A second suggestion on the
        same question replaces the first (and does not count against the limits).
        """
        text = " ".join(suggestion.split())
        if not text:
            raise ValueError("an empty suggestion")
        if len(text) > MAX_SUGGESTION_CHARS:
            raise ValueError(f"a suggestion longer than {MAX_SUGGESTION_CHARS} characters")
        at = created_at if created_at is not None else time.time()
        with self._lock, closing(self._connect()) as db, db:
            vote = db.execute(
                "SELECT question, answer, index_version, adapter, channel FROM feedback"
                " WHERE question_id = ? AND user = ?",
                (question_id, user),
            ).fetchone()
            if vote is None:
                return False
            waiting = "decision = 'pending' AND suggestion IS NOT NULL"
            again = db.execute(
                f"SELECT 1 FROM review WHERE question_id = ? AND user = ? AND {waiting}",
                (question_id, user),
            ).fetchone()
            if not again:
                mine = db.execute(
                    f"SELECT COUNT(*) FROM review WHERE user = ? AND {waiting}", (user,)
                ).fetchone()[0]
                everyone = db.execute(f"SELECT COUNT(*) FROM review WHERE {waiting}").fetchone()[0]
                if mine >= max_pending_per_user or everyone >= max_pending:
                    raise ReviewQueueFull(
                        f"{mine if mine >= max_pending_per_user else everyone} suggestions "
                        "already wait for review",
                        fix="an admin runs `lorebot feedback review --out FILE` then --apply",
                    )
            db.execute(
                "INSERT INTO review (question_id, user, suggestion, created_at, question,"
                " shown_answer, index_version, adapter, channel, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (question_id, user) DO UPDATE"
                " SET suggestion = excluded.suggestion, decision = 'pending', answer = NULL,"
                " reviewer = NULL, reviewed_at = NULL, created_at = excluded.created_at,"
                " question = excluded.question, shown_answer = excluded.shown_answer,"
                " index_version = excluded.index_version, adapter = excluded.adapter,"
                " channel = excluded.channel, source = excluded.source",
                (question_id, user, text, at, *vote, source),
            )
        log.info("feedback suggestion question=%s user=%s chars=%d", question_id, user, len(text))
        return True

    def suggestions(self) -> list[dict[str, Any]]:
        """Every stored suggestion with its provenance and review state, oldest first."""
        cols = "question_id, user, suggestion, decision, answer, reviewer, reviewed_at, created_at"
        extra = ", ".join(name for name, _ in REVIEW_PROVENANCE)
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                f"SELECT {cols}, {extra} FROM review WHERE suggestion IS NOT NULL"
                " ORDER BY created_at, rowid"
            ).fetchall()
        return [dict(r) for r in rows]

    def pending_review(self) -> list[dict[str, Any]]:
        """Votes an admin has not decided on: 👎 with a suggestion, and 👍 on real answers."""
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT f.question_id, f.user, f.vote,"
                " COALESCE(r.question, f.question) AS question,"
                " COALESCE(r.shown_answer, f.answer) AS answer, r.suggestion,"
                " r.created_at AS suggested_at,"
                " COALESCE(r.index_version, f.index_version) AS index_version,"
                " COALESCE(r.adapter, f.adapter) AS adapter"
                " FROM feedback f LEFT JOIN review r USING (question_id, user)"
                " WHERE f.question IS NOT NULL AND COALESCE(r.decision, 'pending') = 'pending'"
                " AND ((f.vote = -1 AND r.suggestion IS NOT NULL)"
                "      OR (f.vote = 1 AND COALESCE(f.abstained, 0) = 0 AND f.answer IS NOT NULL))"
                " ORDER BY f.created_at, f.rowid"
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r) | {"decision": None, "reviewer": None}
            if d["suggested_at"] is not None:
                d["suggested_at"] = datetime.fromtimestamp(d["suggested_at"], tz=UTC).isoformat()
            out.append(d)
        return out

    def decide(
        self, *, question_id: str, user: str, accept: bool, reviewer: str, answer: str | None
    ) -> bool:
        """Record an admin's decision; ``answer`` is the accepted right answer (the
        suggestion, the liked answer, or the admin's edit). False when no such vote."""
        with self._lock, closing(self._connect()) as db, db:
            if not db.execute(
                "SELECT 1 FROM feedback WHERE question_id = ? AND user = ?", (question_id, user)
            ).fetchone():
                return False
            db.execute(
                "INSERT INTO review (question_id, user, decision, answer, reviewer, reviewed_at,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (question_id, user)"
                " DO UPDATE SET decision = excluded.decision, answer = excluded.answer,"
                " reviewer = excluded.reviewer, reviewed_at = excluded.reviewed_at",
                (
                    question_id,
                    user,
                    "accepted" if accept else "rejected",
                    " ".join(answer.split()) if (accept and answer) else None,
                    reviewer,
                    time.time(),
                    time.time(),
                ),
            )
        return True

    def count(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def recent(
        self, *, limit: int = 50, offset: int = 0, query: str | None = None
    ) -> list[dict[str, Any]]:
        """Votes with 👎 first, newest first within each, with any admin correction.

        ``query`` keeps questions containing it (case-insensitive); ``limit`` is capped
        at 500 so a page never reads the whole store.
        """
        limit = max(1, min(int(limit), 500))
        offset = max(0, int(offset))
        where, args = "", []
        if query:
            where = "WHERE f.question LIKE ? ESCAPE '\\'"
            esc = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{esc}%")
        cols = ",".join(f"f.{c}" for c in COLUMNS)
        sql = (
            f"SELECT {cols}, c.answer AS corrected, c.admin AS corrected_by"
            " FROM feedback f LEFT JOIN corrections c ON c.question_id = f.question_id"
            f" {where} ORDER BY f.vote ASC, f.created_at DESC, f.rowid DESC LIMIT ? OFFSET ?"
        )
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql, (*args, limit, offset)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["citations"] = json.loads(d["citations"] or "[]")
            d["abstained"] = None if d["abstained"] is None else bool(d["abstained"])
            out.append(d)
        return out

    def vote_counts(self) -> dict[str, int]:
        """{"up": n, "down": n, "corrected": n}."""
        with closing(self._connect()) as db:
            # GROUP BY vote reads the (vote, created_at) index, not the rows
            by_vote = dict(db.execute("SELECT vote, COUNT(*) FROM feedback GROUP BY vote"))
            up, down = by_vote.get(1, 0), by_vote.get(-1, 0)
            corrected = db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]
        return {"up": int(up), "down": int(down), "corrected": int(corrected)}

    def correct(self, *, question_id: str, answer: str, admin: str) -> str:
        """Store an admin's right answer to a voted question; returns the question.

        Raises ``KeyError`` when nobody voted on ``question_id`` (there is nothing to
        correct) and ``ValueError`` for an empty answer. A second correction replaces
        the first.
        """
        answer = answer.strip()
        if not answer:
            raise ValueError("the answer is empty")
        with self._lock, closing(self._connect()) as db, db:
            row = db.execute(
                "SELECT question FROM feedback WHERE question_id = ? AND question IS NOT NULL"
                " LIMIT 1",
                (question_id,),
            ).fetchone()
            if row is None:
                raise KeyError(question_id)
            db.execute(
                "INSERT OR REPLACE INTO corrections (question_id, question, answer, admin,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (question_id, row[0], answer, admin, time.time()),
            )
        log.info("feedback correction question=%s admin=%s", question_id, admin)
        return str(row[0])


def export_jsonl(settings: Settings, out_path: Path | str) -> int:
    """Write every stored vote as one JSON object per line; ``-`` writes to stdout.

    Returns the number of records written (0 when nobody has voted yet).
    """
    import sys

    path = feedback_path(settings)
    if not path.exists():
        store_rows: Iterator[dict[str, Any]] = iter(())
    else:
        store_rows = FeedbackStore(path).rows()
    n = 0
    if str(out_path) == "-":
        for row in store_rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        sys.stdout.flush()
        return n
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in store_rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {out}: {exc}", fix="choose a writable output path"
        ) from None
    return n


def _read_only(settings: Settings, sql: str, args: tuple) -> list[tuple]:
    path = feedback_path(settings)
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such table: corrections" in str(exc):  # a store from before corrections
            return []
        raise FeedbackReadError(f"cannot read feedback {path}: {exc}") from None


def corrections(settings: Settings, limit: int = 200) -> list[tuple[str, str]]:
    """``(question, answer)`` an admin wrote in the console, newest first.

    These are the surest pairs there are: for the gate's golden questions and for
    training. Read-only like :func:`liked_answers`.
    """
    return [
        (q, a)
        for q, a in _read_only(
            settings,
            "SELECT question, answer FROM corrections ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )
    ]


def liked_answers(settings: Settings, limit: int = 200) -> list[tuple[str, str]]:
    """``(question, answer)``: admins' corrections, then the newest 👍 votes on real answers.

    A liked read-mode answer gives its short answer (what the gate scores in that mode), any
    other its whole text. A corrected question's own 👍 answer is left out (the correction
    replaces it). Opens the file read-only and never creates it: no file yet means no votes.
    Raises :class:`FeedbackReadError` when the file is there but cannot be read.
    """
    fixed = corrections(settings, limit)
    seen = {q for q, _ in fixed}
    sql = (
        "SELECT question, {answer} FROM feedback"
        " WHERE vote = 1 AND COALESCE(abstained, 0) = 0"
        " AND question IS NOT NULL AND answer IS NOT NULL"
        " ORDER BY created_at DESC LIMIT ?"
    )
    try:
        rows = _read_only(settings, sql.format(answer="COALESCE(short_answer, answer)"), (limit,))
    except FeedbackReadError as exc:
        if "no such column: short_answer" not in exc.message:
            raise
        # A store no FeedbackStore has opened since short answers were kept (read-only here).
        rows = _read_only(settings, sql.format(answer="answer"), (limit,))
    liked = [(q, a) for q, a in rows if q not in seen]
    return (fixed + liked)[:limit]


def review_export(settings: Settings, out_path: Path | str) -> int:
    """Write the votes awaiting review as JSONL (``REVIEW_FIELDS``; ``decision`` null).

    The admin sets ``decision`` to ``"accept"`` or ``"reject"`` (and may edit ``answer``
    or ``suggestion``: what is accepted is the suggestion when there is one, else the
    answer) and hands the file to :func:`review_apply`.
    """
    path = feedback_path(settings)
    rows = FeedbackStore(path).pending_review() if path.exists() else []
    text = "".join(
        json.dumps({k: r.get(k) for k in REVIEW_FIELDS}, ensure_ascii=False) + "\n" for r in rows
    )
    if str(out_path) == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        out = Path(out_path)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc}", fix="choose a writable path") from None
    return len(rows)


def review_apply(settings: Settings, in_path: Path, reviewer: str) -> dict[str, int]:
    """Apply a reviewed JSONL file; counts of accepted, rejected, skipped (undecided) and
    unknown (no such vote) lines.

    Every line is checked before any is applied: a malformed line, or one accepting an
    empty answer or one over :data:`MAX_SUGGESTION_CHARS`, is a ConfigError naming the line
    and nothing of the file is applied."""
    counts = {"accepted": 0, "rejected": 0, "skipped": 0, "unknown": 0}
    try:
        lines = Path(in_path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {in_path}: {exc}", fix="check the path") from None
    decisions: list[tuple[str, str, bool, str, str | None]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            decision = (row.get("decision") or "").strip().lower()
            qid, user = str(row["question_id"]), str(row["user"])
        except (ValueError, KeyError, AttributeError, TypeError):
            raise ConfigError(
                f"{in_path} line {n} is not a review record",
                fix="keep the lines `lorebot feedback review --out` wrote; set decision",
            ) from None
        if decision not in ("accept", "reject"):
            counts["skipped"] += 1
            continue
        answer = row.get("suggestion") or row.get("answer")
        if decision == "accept":
            if not isinstance(answer, str) or not answer.strip():
                raise ConfigError(
                    f"{in_path} line {n} accepts a vote without an answer",
                    fix="give the right answer in 'suggestion', or reject the line",
                )
            if len(" ".join(answer.split())) > MAX_SUGGESTION_CHARS:
                raise ConfigError(
                    f"{in_path} line {n} accepts an answer longer than "
                    f"{MAX_SUGGESTION_CHARS} characters",
                    fix="shorten the right answer in 'suggestion', or reject the line",
                )
        who = str(row.get("reviewer") or reviewer)
        decisions.append((qid, user, decision == "accept", who, answer))
    store = FeedbackStore(feedback_path(settings))
    for qid, user, accept, who, answer in decisions:
        ok = store.decide(question_id=qid, user=user, accept=accept, reviewer=who, answer=answer)
        counts["unknown" if not ok else ("accepted" if accept else "rejected")] += 1
    return counts


def _collections_of(citations_json: str | None) -> set[str]:
    """The collections of the passages listed under an answer (its stored citations)."""
    try:
        cites = json.loads(citations_json or "[]")
    except ValueError:
        return set()
    return {
        str(c["collection"])
        for c in cites
        if isinstance(c, dict) and isinstance(c.get("collection"), str) and c["collection"]
    }


def accepted_answers(settings: Settings, limit: int = 500) -> list[dict[str, Any]]:
    """Reviewed right answers, the answers admins wrote in the console first, then accepted
    reviews newest first: ``{question, answer, kind, question_id, user, reviewer,
    reviewed_at, collections}``.

    ``kind`` is "correction" (written in the console, or a 👎 with an accepted suggestion) or
    "liked" (an accepted 👍). ``collections`` are the collections of the passages the
    corrected answer listed, which the asker could search (sorted; empty when it listed
    none); ``reviewed_at`` is an ISO time. Read-only, like :func:`liked_answers`."""
    path = feedback_path(settings)
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            db.row_factory = sqlite3.Row
            tables = {
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            rows: list[Any] = []
            # answers an admin wrote in the console are reviewed by their author; their
            # scope is every vote's on that question
            if "corrections" in tables:
                rows += db.execute(
                    "SELECT c.question, c.answer, -1 AS vote, c.question_id, c.admin AS user,"
                    " c.admin AS reviewer, c.created_at AS reviewed_at,"
                    " (SELECT json_group_array(f.citations) FROM feedback f"
                    "  WHERE f.question_id = c.question_id) AS citations"
                    " FROM corrections c ORDER BY c.created_at DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            if "review" in tables:
                rows += db.execute(
                    "SELECT f.question, r.answer, f.vote, f.question_id, f.user, r.reviewer,"
                    " r.reviewed_at, json_array(f.citations) AS citations"
                    " FROM review r JOIN feedback f USING (question_id, user)"
                    " WHERE r.decision = 'accepted' AND r.answer IS NOT NULL"
                    " AND f.question IS NOT NULL ORDER BY r.reviewed_at DESC LIMIT ?",
                    (limit,),
                ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise FeedbackReadError(f"cannot read feedback {path}: {exc}") from None
    out = []
    for r in rows:
        scope: set[str] = set()
        for cites in json.loads(r["citations"] or "[]"):
            scope |= _collections_of(cites)
        at = r["reviewed_at"]
        out.append(
            {
                "question": r["question"],
                "answer": r["answer"],
                "kind": "correction" if r["vote"] == -1 else "liked",
                "question_id": r["question_id"],
                "user": r["user"],
                "reviewer": r["reviewer"],
                "reviewed_at": (
                    datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds")
                    if at is not None
                    else None
                ),
                "collections": sorted(scope),
            }
        )
    return out[:limit]


# ----------------------------------------------------------------------------- reviewed answers
#: Format version of the published reviewed answers (see :func:`publish_reviewed`).
REVIEWED_FORMAT = 1


def reviewed_path(settings: Settings) -> Path:
    """Where the refresh publishes reviewed answers for the answer path to read."""
    return settings.data_dir / "reviewed_answers.json"


def publish_reviewed(
    settings: Settings, limit: int = 500, withheld: Iterable[str] = ()
) -> dict[str, int]:
    """Publish every accepted correction as a reviewed answer the answer path may show.

    Each keeps its provenance (the original question and its id, who suggested it, who
    accepted it and when) and the collections of the passages the corrected answer listed:
    it is shown only to askers who may search all of them (:mod:`slm.serving.reviewed`),
    so it never crosses into a collection its asker did not search. A correction whose
    answer listed no passage has no known scope and is not published (it still trains);
    nor is one whose scope has a ``withheld`` collection (one an answer-as-the-asker source
    feeds: the corrected answer may have quoted a document only its asker could read, and
    the collection's other askers would see the correction).
    Per question (case and spacing aside) and scope the newest correction wins. Accepted
    👍 answers are not published: they are the bot's own answers, in the documents already.

    Written whole under a temporary name and renamed; returns ``{"published", "unscoped",
    "withheld"}``.
    """
    from lorebot.files import atomic_write_text

    answers, seen, unscoped, held = [], set(), 0, 0
    withheld = set(withheld)
    for row in accepted_answers(settings, limit):
        if row["kind"] != "correction":
            continue
        if not row["collections"]:
            unscoped += 1
            continue
        if withheld & set(row["collections"]):
            held += 1
            continue
        key = (" ".join(row["question"].lower().split()), tuple(row["collections"]))
        if key in seen:
            continue
        seen.add(key)
        answers.append({k: row[k] for k in REVIEWED_FIELDS})
    text = json.dumps({"format": REVIEWED_FORMAT, "answers": answers}, ensure_ascii=False)
    atomic_write_text(reviewed_path(settings), text + "\n")
    log.info(
        "feedback: %d reviewed answers published (%d without a scope, %d withheld)",
        len(answers),
        unscoped,
        held,
    )
    return {"published": len(answers), "unscoped": unscoped, "withheld": held}


#: What a published reviewed answer holds.
REVIEWED_FIELDS = (
    "question", "answer", "collections", "question_id", "user", "reviewer", "reviewed_at",
)  # fmt: skip


def published_reviewed(path: Path) -> list[dict[str, Any]]:
    """The reviewed answers :func:`publish_reviewed` wrote to ``path`` ([] when none yet).

    A file that is there but unreadable or of another format is a :class:`FeedbackReadError`
    (the answer path logs it and answers without them)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise FeedbackReadError(f"cannot read reviewed answers {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REVIEWED_FORMAT:
        raise FeedbackReadError(f"reviewed answers {path} are not of format {REVIEWED_FORMAT}")
    out = []
    for row in data.get("answers") or []:
        if (
            isinstance(row, dict)
            and all(isinstance(row.get(k), str) and row[k].strip() for k in ("question", "answer"))
            and isinstance(row.get("collections"), list)
            and row["collections"]
        ):
            out.append({k: row.get(k) for k in REVIEWED_FIELDS})
    return out
