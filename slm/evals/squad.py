"""The QA file: a SQuAD v1.1 file read into passages and questions, and the questions sampled.

:func:`choose_heldout` picks the questions whose passage the temporary index hides from them
(the abstention check of :mod:`slm.evals.evalset`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorebot.errors import LorebotError
from slm.evals import metrics


class EvalDataError(LorebotError):
    """The QA file cannot be used for an evaluation."""


@dataclass(frozen=True)
class Passage:
    """One context paragraph of the QA file."""

    pid: str
    title: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """One question with its gold answers and the passage they come from."""

    qid: str
    question: str
    answers: tuple[str, ...]
    pid: str


def load_squad(path: Path) -> tuple[list[Passage], list[QAItem]]:
    """Passages and questions of a SQuAD v1.1-format file, in file order.

    Raises EvalDataError (with the fix) for a missing file, bad JSON or another layout.
    """
    path = Path(path)
    fix = (
        "pass a SQuAD v1.1 JSON file: "
        "{data: [{title, paragraphs: [{context, qas: [{question, answers: [{text}]}]}]}]}"
    )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalDataError(f"QA file {path} does not exist", fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(
            f"QA file {path} cannot be read ({exc})",
            fix="check the file's permissions and encoding",
        ) from None
    except json.JSONDecodeError as exc:
        raise EvalDataError(
            f"QA file {path} is not valid JSON (line {exc.lineno})", fix=fix
        ) from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise EvalDataError(f"QA file {path} has no 'data' list", fix=fix)
    passages: list[Passage] = []
    items: list[QAItem] = []
    try:
        for a, article in enumerate(data):
            title = " ".join(
                str(article.get("title") or f"Article {a + 1}").replace("_", " ").split()
            )
            for paragraph in article["paragraphs"]:
                context = str(paragraph["context"]).strip()
                if not context:
                    continue
                pid = f"p{len(passages):05d}"
                passages.append(Passage(pid, title, context))
                for q in paragraph.get("qas", []):
                    answers = tuple(
                        dict.fromkeys(
                            str(x["text"]).strip()
                            for x in q.get("answers", [])
                            if str(x["text"]).strip()
                        )
                    )
                    text = " ".join(str(q["question"]).split())
                    if not answers or not text:
                        continue  # SQuAD v2 "impossible" questions have no answers
                    items.append(
                        QAItem(str(q.get("id") or f"q{len(items):05d}"), text, answers, pid)
                    )
    except (KeyError, TypeError, AttributeError) as exc:
        raise EvalDataError(
            f"QA file {path} is not in SQuAD v1.1 format (missing {exc})", fix=fix
        ) from None
    if not items:
        raise EvalDataError(f"QA file {path} holds no answerable question", fix=fix)
    return passages, items


def sample_questions(items: Sequence[QAItem], limit: int | None, seed: int) -> list[QAItem]:
    """``limit`` questions drawn without replacement with ``seed`` (all, in order, when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise EvalDataError(
            f"--limit must be at least 1 (got {limit})", fix="pass a positive --limit"
        )
    return random.Random(seed).sample(list(items), limit)


def choose_heldout(
    passages: Sequence[Passage], items: Sequence[QAItem], n: int, seed: int
) -> list[QAItem]:
    """``n`` questions (on distinct passages) whose passage will be hidden from them.

    Only questions whose gold answers occur in no other passage qualify: otherwise a
    sibling paragraph could legitimately answer them and abstaining would be wrong.
    """
    if n <= 0:
        return []
    texts = {p.pid: p.text for p in passages}
    order = list(items)
    random.Random(seed + 1_000_003).shuffle(order)
    chosen: list[QAItem] = []
    used: set[str] = set()
    for item in order:
        if item.pid in used:
            continue
        if any(
            metrics.contains_answer(t, item.answers) for pid, t in texts.items() if pid != item.pid
        ):
            continue
        chosen.append(item)
        used.add(item.pid)
        if len(chosen) == n:
            break
    return chosen
