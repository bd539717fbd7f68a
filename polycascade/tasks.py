"""A task, the verdict on an answer, each attempt at it, and the result the caller gets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import field
from decimal import Decimal
from typing import Any, Literal, NoReturn

from pydantic import BaseModel

from .errors import ConfigError
from .records import frozen
from .types import Message, ToolCall

__all__ = ["Attempt", "Status", "Task", "TaskResult", "Verdict"]

Status = Literal["verified", "unverified", "failed"]
DEFAULT_TIMEOUT_S = 60.0  # each call's
MAX_TOKENS = 1_000_000  # above any model's output: a larger ask is a mistake, never a reservation


@frozen
class Task:
    """One unit of LLM work. `schema` asks for JSON that validates as that pydantic model.

    `kind` and `data_class` left unset take the policy's defaults (`Policy.resolve`), in every entry
    point; a data class the policy does not define is refused.
    """

    prompt: str
    kind: str | None = None
    data_class: str | None = None
    system: str | None = None
    schema: type[BaseModel] | None = None
    max_tokens: int = 512
    timeout_s: float = DEFAULT_TIMEOUT_S
    cost_ceiling: Decimal | None = None
    capabilities: frozenset[str] = frozenset()
    input_tokens: int | None = None  # the prompt's size when known; otherwise estimated
    messages: tuple[Message, ...] = ()  # a whole conversation (chat integrations); else system + prompt
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI-format tool definitions the model may call
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    run_id: str = "adhoc"
    tenant: str = "default"

    def __check__(self) -> None:
        """Values no call could honour are the caller's mistake, refused before anything is reserved."""
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            _refuse("max_tokens", f"must be a whole number, got {self.max_tokens!r}")
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            _refuse("max_tokens", f"must be 1 to {MAX_TOKENS:,}, got {self.max_tokens:,}")
        if not self.timeout_s > 0:
            _refuse("timeout_s", f"must be positive, got {self.timeout_s}")
        if self.input_tokens is not None and self.input_tokens < 0:
            _refuse("input_tokens", f"cannot be negative, got {self.input_tokens}")
        if self.cost_ceiling is not None and self.cost_ceiling < 0:
            _refuse("cost_ceiling", f"cannot be negative, got {self.cost_ceiling}")


def _refuse(parameter: str, problem: str) -> NoReturn:
    raise ConfigError(f"`{parameter}` {problem}", parameter=parameter)


@frozen
class Verdict:
    """An evaluator's judgement. `verifies` is False for sanity checks that cannot vouch for an answer.

    `teaches` is False when the verdict steers the cascade but is no fair evidence about the model:
    agreement between vendors (a disagreement says one answer is wrong, not which; a confirmation
    is only possible on the questions where a second opinion was asked).
    """

    passed: bool
    score: float
    reason: str
    evaluator: str
    verifies: bool = True
    cost: Decimal = Decimal(0)
    teaches: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "score": round(self.score, 4),
            "reason": self.reason,
            "evaluator": self.evaluator,
            "verifies": self.verifies,
            "cost_usd": str(self.cost),
        }


@frozen
class Attempt:
    rung: int
    model: str
    vendor: str
    cost: Decimal
    answer: str | None
    call_id: str | None = None
    verdict: Verdict | None = None
    error: str | None = None  # the provider's failure, in full (operators: CLI, ledger)
    error_kind: str | None = None  # the same without the provider's words: class and status (tenants)
    decision: Mapping[str, Any] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    p_pass: float | None = None  # the router's estimate when it chose this model

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "model": self.model,
            "vendor": self.vendor,
            "cost_usd": str(self.cost),
            "call_id": self.call_id,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "error": self.error,
            "why": self.decision.get("reason") if self.decision else None,
        }


@frozen
class TaskResult:
    """What a task came to. `chosen` is the attempt whose answer is returned; the rest derive from it."""

    task_id: str
    status: Status
    chosen: Attempt | None
    attempts: tuple[Attempt, ...]
    total_cost: Decimal
    parsed: BaseModel | None = None
    stop_reason: str = ""

    @property
    def answer(self) -> str | None:
        return self.chosen.answer if self.chosen else None

    @property
    def verdict(self) -> Verdict | None:
        return self.chosen.verdict if self.chosen else None

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.chosen.tool_calls if self.chosen else ()

    @property
    def model(self) -> str | None:
        """The model whose answer this is."""
        return self.chosen.model if self.chosen else None

    @property
    def call_id(self) -> str | None:
        """The ledger row of the call that produced the answer (for `polycascade explain`)."""
        return self.chosen.call_id if self.chosen else None

    @property
    def usage(self) -> tuple[int, int]:
        """Input and output tokens over every attempt."""
        return sum(a.input_tokens for a in self.attempts), sum(a.output_tokens for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "answer": self.answer,
            "status": self.status,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "total_cost_usd": str(self.total_cost),
            "stop_reason": self.stop_reason,
            "attempts": [a.to_dict() for a in self.attempts],
        }
