"""Split text into chunks of at most N tokens at sentence boundaries, Japanese included.

Sentences end at . ! ? followed by a space or line end, at 。！？ (Japanese needs no space after
them), and at blank lines. A sentence longer than a chunk is cut at the token limit.
"""

from __future__ import annotations

import re

from polycascade.tokens import estimate_tokens

__all__ = ["chunk_text", "sentences"]

_BOUNDARY = re.compile(r"(?<=[。！？!?])|(?<=[.!?])(?=\s)|\n\s*\n")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _BOUNDARY.split(text) if s and s.strip()]


def chunk_text(text: str, max_tokens: int = 800) -> list[str]:
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences(text):
        for piece in _fit(sentence, max_tokens):
            cost = estimate_tokens(piece)
            if current and size + cost > max_tokens:
                chunks.append(_join(current))
                current, size = [], 0
            current.append(piece)
            size += cost
    if current:
        chunks.append(_join(current))
    return chunks


def _fit(sentence: str, max_tokens: int) -> list[str]:
    """The sentence, or pieces of it that each fit a chunk."""
    if estimate_tokens(sentence) <= max_tokens:
        return [sentence]
    pieces, start = [], 0
    while start < len(sentence):
        end = start + 1
        step = max(1, len(sentence) // 2)
        while end < len(sentence) and step:  # grow the piece while it fits (binary search on length)
            if estimate_tokens(sentence[start : min(end + step, len(sentence))]) <= max_tokens:
                end = min(end + step, len(sentence))
            else:
                step //= 2
        pieces.append(sentence[start:end])
        start = end
    return pieces


def _join(parts: list[str]) -> str:
    out = ""
    for part in parts:  # no space between Japanese sentences; one between others
        out += part if not out or out.endswith(("。", "！", "？")) else f" {part}"
    return out
