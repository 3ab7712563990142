"""Token counting in the embedding model's own word pieces, without torch.

Chunk sizes are measured in the tokens MiniLM actually sees (it truncates at 256), so
chunking needs the model's WordPiece tokenizer. The Rust ``tokenizers`` library loads
it straight from ``tokenizer.json`` in milliseconds, which lets parse workers count
tokens without importing torch or sentence-transformers.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol


class TokenCounter(Protocol):
    """What chunking needs from a tokenizer: counts, and where the last n tokens start."""

    def count(self, text: str) -> int: ...

    def tail(self, text: str, n: int) -> str: ...

    def head(self, text: str, n: int) -> str: ...


class WordPieceCounter:
    """Counts MiniLM word pieces (no special tokens) with the model's fast tokenizer."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        # Chunks are sized by us; the tokenizer must never cut or pad on its own.
        self._tok.no_truncation()
        self._tok.no_padding()

    def _encode(self, text: str):
        return self._tok.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._encode(text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        # Counts need no character offsets: the fast batch call skips computing them.
        batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [len(e.ids) for e in batch(texts, add_special_tokens=False)]

    def _word_start(self, enc, i: int) -> int:
        """Index of the first token at or after i that starts a word (not a ##piece)."""
        tokens = enc.tokens
        while i < len(tokens) and tokens[i].startswith("##"):
            i += 1
        return i

    def tail(self, text: str, n: int) -> str:
        """The end of `text` holding at most n tokens, starting on a word boundary."""
        if n <= 0 or not text:
            return ""
        # Only the end matters: encode a window of it that starts at whitespace (so its
        # first word is whole and its tokens are exactly the full text's last tokens).
        window = n * 12 + 64
        if len(text) > window:
            m = _SPACE.search(text, len(text) - window)
            if m is not None and m.end() < len(text):
                sub = text[m.end() :]
                enc = self._encode(sub)
                if len(enc.ids) > n:
                    i = self._word_start(enc, len(enc.ids) - n)
                    return sub[enc.offsets[i][0] :] if i < len(enc.ids) else ""
        enc = self._encode(text)
        if len(enc.ids) <= n:
            return text
        i = self._word_start(enc, len(enc.ids) - n)
        if i >= len(enc.ids):
            return ""
        return text[enc.offsets[i][0] :]

    def head(self, text: str, n: int) -> str:
        """The start of `text` holding at most n tokens, ending on a word boundary."""
        if n <= 0 or not text:
            return ""
        enc = self._encode(text)
        if len(enc.ids) <= n:
            return text
        # Cut before the word that token n belongs to, so no word is split in two.
        i = n
        while i > 0 and enc.tokens[i].startswith("##"):
            i -= 1
        if i == 0:  # one enormous "word" (a URL, base64): cut inside it
            i = n
        return text[: enc.offsets[i][0]].rstrip()

    def windows(self, text: str, size: int) -> list[str]:
        """Split text into consecutive pieces of at most `size` tokens on word boundaries."""
        out: list[str] = []
        rest = text.strip()
        while rest:
            piece = self.head(rest, size)
            if not piece:  # cannot make progress on a boundary: hard cut
                enc = self._encode(rest)
                cut = enc.offsets[min(size, len(enc.ids)) - 1][1]
                piece = rest[:cut]
            out.append(piece.strip())
            rest = rest[len(piece) :].strip()
        return [p for p in out if p]


@lru_cache(maxsize=4)
def counter_for(model_dir: str) -> WordPieceCounter:
    """One counter per model directory per process (parse workers reuse it)."""
    return WordPieceCounter(Path(model_dir))


_WS = re.compile(r"\s+")
_SPACE = re.compile(r"\s")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Text reduced for near-duplicate detection: case, whitespace and punctuation folded."""
    return _WS.sub(" ", _PUNCT.sub(" ", text.lower())).strip()
