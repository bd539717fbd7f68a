"""A task, the verdict on an answer, each attempt at it, and the result the caller gets."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import field
from decimal import Decimal
from typing import Any, Literal, NoReturn

from pydantic import BaseModel

from .errors import ConfigError
from .records import frozen
from .types import Message, ToolCall

__all__ = ["Attempt", "Preferences", "Status", "Task", "TaskResult", "Verdict"]

Status = Literal["verified", "unverified", "failed"]
DEFAULT_TIMEOUT_S = 60.0  # each call's
MAX_TOKENS = 1_000_000  # above any model's output: a larger ask is a mistake, never a reservation


Percentile = Literal["p50", "p95"]
Sort = Literal["cost", "latency", "throughput"]


@frozen
class Preferences:
    """A request's preferences. Prices are USD per 1M tokens; vendors match case-insensitively."""

    max_latency_s: float | None = None
    latency_percentile: Percentile = "p95"
    sort: Sort = "cost"
    max_price_in: Decimal | None = None
    max_price_out: Decimal | None = None
    only_vendors: frozenset[str] | None = None  # None: any the policy allows
    ignore_vendors: frozenset[str] = frozenset()
    only_models: frozenset[str] | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any] | Preferences | None, where: str = "prefer") -> Preferences | None:
        """From JSON or YAML (`serve`, a policy route, `PolycascadeChat`); a bad value is the caller's
        error, naming the field."""
        if data is None or isinstance(data, Preferences):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"`{where}` must be an object of preferences, got {type(data).__name__}", parameter=where)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"`{where}`: unknown preference(s) {sorted(unknown)}; use {_FIELDS}", parameter=where)
        try:
            return cls(
                max_latency_s=_positive(data.get("max_latency_s"), "max_latency_s"),
                latency_percentile=_one_of(data.get("latency_percentile", "p95"), ("p50", "p95"), "latency_percentile"),
                sort=_one_of(data.get("sort", "cost"), ("cost", "latency", "throughput"), "sort"),
                max_price_in=_price(data.get("max_price_in")),
                max_price_out=_price(data.get("max_price_out")),
                only_vendors=_names(data.get("only_vendors")),
                ignore_vendors=_names(data.get("ignore_vendors")) or frozenset(),
                only_models=frozenset(data["only_models"]) if data.get("only_models") is not None else None,
            )
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ConfigError(f"`{where}.{exc}", parameter=where) from None

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_s is not None or self.sort != "cost"

    def narrowed(self, by: Preferences | None) -> Preferences:
        """These preferences and `by` at once (a route's, then a request's): the narrower of each."""
        if by is None:
            return self
        return Preferences(
            max_latency_s=_least(self.max_latency_s, by.max_latency_s),
            latency_percentile=by.latency_percentile if by.max_latency_s is not None else self.latency_percentile,
            sort=by.sort if by.sort != "cost" else self.sort,
            max_price_in=_least(self.max_price_in, by.max_price_in),
            max_price_out=_least(self.max_price_out, by.max_price_out),
            only_vendors=_both(self.only_vendors, by.only_vendors),
            ignore_vendors=self.ignore_vendors | by.ignore_vendors,
            only_models=_both(self.only_models, by.only_models),
        )


_FIELDS = "max_latency_s, latency_percentile (p50|p95), sort (cost|latency|throughput), max_price_in, " \
          "max_price_out (USD per 1M tokens), only_vendors, ignore_vendors, only_models"  # fmt: skip


def _positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name}` must be a positive number of seconds, got {value!r}")
    return float(value)


def _one_of(value: Any, allowed: tuple[str, ...], name: str) -> Any:
    if value not in allowed:
        raise ValueError(f"{name}` must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _price(value: Any) -> Decimal | None:
    if value is None:
        return None
    price = Decimal(str(value))
    if not price >= 0:
        raise ValueError(f"max_price_*` must be a price per 1M tokens (>= 0), got {value!r}")
    return price


def _names(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(str(v).lower() for v in value)


def _both(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """Both allow-lists at once: what is in each (an empty one allows nothing)."""
    return b if a is None else a if b is None else a & b


def _least(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


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
    prefer: Preferences | None = None  # latency bound, order, price cap, vendors: they narrow, never widen

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
