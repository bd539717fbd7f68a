"""Token counts before a call: an estimate, for routing and context windows, and a bound, for budgets.

The estimate over-counts typical text (CJK characters count one token each, other text a token per
three characters). The bound holds for any prompt in any byte-level tokenizer (GPT, Llama, Qwen,
DeepSeek, Mistral …): no token is shorter than one byte, so a prompt takes at most its UTF-8 bytes,
plus what chat templates add per message. Budgets reserve the bound: a hostile or unlucky prompt
(random characters, emoji) cannot make a call cost more than was reserved for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from .types import Message

__all__ = ["PromptSize", "estimate_tokens", "prompt_size"]

_WIDE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
MESSAGE_OVERHEAD = 4  # role and separators in chat templates


TEMPLATE_BOUND = 8  # the most a chat template adds per message (role, separators, special tokens)


def estimate_tokens(text: str) -> int:
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / 3) + MESSAGE_OVERHEAD


class PromptSize(NamedTuple):
    estimate: int
    bound: int


def prompt_size(messages: Iterable[Message], tools: Iterable[Any] = (), json_schema: Any = None) -> PromptSize:
    """Everything a request sends before its answer: every message (tool calls included), the tool
    definitions and the response schema."""
    parts = [m.content + "".join(json.dumps(c.arguments) + c.name for c in m.tool_calls) for m in messages]
    extra = json.dumps(list(tools)) if tools else ""
    extra += json.dumps(json_schema) if json_schema is not None else ""
    estimate = sum(estimate_tokens(p) for p in parts) + (estimate_tokens(extra) if extra else 0)
    bound = sum(len(p.encode()) + TEMPLATE_BOUND for p in parts) + len(extra.encode()) + TEMPLATE_BOUND
    return PromptSize(estimate, max(estimate, bound))
