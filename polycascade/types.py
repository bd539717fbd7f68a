"""Plain data passed between layers: what to ask a model, what came back, and call context."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from .records import frozen

__all__ = ["CallContext", "Completion", "CompletionRequest", "Message", "Tally", "ToolCall", "Usage"]

Role = Literal["system", "user", "assistant", "tool"]


@frozen
class Message:
    role: Role
    content: str
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return out


@frozen
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


@frozen
class CallContext:
    """Who is calling and why; stored with the call in the ledger."""

    run_id: str = "adhoc"
    task_id: str = ""
    node: str = ""
    task_kind: str = "general"
    data_class: str = "internal"
    tenant: str = "default"
    decision: Mapping[str, Any] | None = None  # why the call was made (`governor.Why`)


@frozen
class CompletionRequest:
    model: str
    messages: tuple[Message, ...]
    max_tokens: int = 512
    temperature: float | None = 0.0
    tools: tuple[dict[str, Any], ...] = ()
    json_schema: dict[str, Any] | None = None
    timeout_s: float = 60.0  # each attempt's
    deadline: float | None = None  # time.monotonic() by which an answer is needed: no retry waits past it
    context: CallContext = field(default_factory=CallContext)
    call_id: str | None = None  # the ledger row to write: the governor's reservation, already there in flight

    @classmethod
    def of(cls, model: str, prompt: str, *, system: str | None = None, **kw: Any) -> CompletionRequest:
        messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
        return cls(model=model, messages=messages, **kw)


@frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@frozen
class Completion:
    call_id: str
    model: str
    vendor: str
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    cost: Decimal
    latency_s: float
    attempts: int
    finish_reason: str | None = None
    replayed: bool = False  # recorded by an earlier process and reused: no call was made, nothing is owed


class Tally(NamedTuple):
    """Evaluator outcomes of one model on one task kind (a tuple: routing merges one per model per decision)."""

    passes: int = 0
    fails: int = 0
