"""`PolycascadeChat`: a LangChain chat model whose every call is routed, governed and recorded.

    llm = PolycascadeChat(policy="jp-enterprise", task_kind="extract", data_class="confidential")
    llm.bind_tools([calculator]).invoke("What is 17 * 23?")
    llm.with_structured_output(Invoice).invoke("Extract the invoice: …")

Drop it wherever LangChain expects a chat model (LangGraph's prebuilt ReAct agent included). With
an evaluator attached, answers go through the cascade's escalation; usage and cost arrive in
`usage_metadata` and `response_metadata` (model, vendor, cost, call id for `polycascade explain`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from polycascade.agents.schemas import as_checked_model, json_schema_of
from polycascade.errors import PolycascadeError
from polycascade.service import Service, open_service
from polycascade.sync import run_sync
from polycascade.tasks import DEFAULT_TIMEOUT_S, Preferences, Task, TaskResult
from polycascade.types import Message, ToolCall

__all__ = ["PolycascadeChat"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


class PolycascadeChat(BaseChatModel):
    """A chat model over a pool of models: the cheapest adequate one answers each call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any = None  # a Policy, a policy file, or a preset name
    models: list[str] = Field(default_factory=list)
    models_file: Path | None = None
    catalog: Any = None
    task_kind: str | None = None  # None: the policy's default
    data_class: str | None = None  # None: the policy's default
    tenant: str = "default"
    max_tokens: int = 1024
    timeout: float = DEFAULT_TIMEOUT_S  # each model call's, in seconds (LangChain's standard parameter)
    evaluator: Any = None  # attach one to escalate on failed checks
    ledger: Any = "memory://"
    local: bool = False
    prefer: Any = None  # routing preferences (a dict or `Preferences`): latency, order, price cap, vendors

    _service: Service | None = PrivateAttr(default=None)
    _close: Callable[[], None] | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "polycascade"

    @property
    def model_name(self) -> str:
        """What answers: the policy (its name, file or preset), else the pool."""
        if self.policy is not None:
            return f"polycascade:{getattr(self.policy, 'name', self.policy)}"
        return "polycascade:" + ",".join(self.models) if self.models else "polycascade"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "polycascade"
        params["ls_model_name"] = kwargs.get("model") or self.model_name
        params["ls_max_tokens"] = kwargs.get("max_tokens", self.max_tokens)
        return params

    def service(self) -> Service:
        """The assembled runtime, started on first use (the local model, if any, with it)."""
        if self._service is None:
            stack = contextlib.ExitStack()
            self._service = stack.enter_context(
                open_service(
                    policy=self.policy,
                    models_file=self.models_file,
                    models=self.models,
                    local=self.local,
                    ledger=self.ledger,
                    catalog=self.catalog,
                )
            )
            self._close = weakref.finalize(self, stack.close)
        return self._service

    def close(self) -> None:
        """Stop the local model (if started) and close the ledger; also done when collected."""
        if self._close is not None:
            self._close()
            self._service, self._close = None, None

    # the one implementation --------------------------------------------------------------------
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        service = self.service()
        conversation = tuple(_to_message(m) for m in messages)
        task = Task(
            prompt=next((m.content for m in reversed(conversation) if m.role == "user"), ""),
            messages=conversation,
            tools=tuple(kwargs.get("tools") or ()),
            schema=kwargs.get("response_schema"),
            kind=self.task_kind,
            data_class=self.data_class,
            tenant=self.tenant,
            max_tokens=self.max_tokens,
            timeout_s=self.timeout,
            prefer=Preferences.parse(kwargs.get("prefer", self.prefer)),  # a call's own, else the model's
        )
        pool = service.resolve([kwargs["model"]]) if kwargs.get("model") else None  # a per-call pin
        result = await service.cascade(pool, evaluator=self.evaluator).run(task)
        if result.status == "failed":
            failures = "; ".join(f"{a.model}: {a.error_kind}" for a in result.attempts if a.error_kind)
            raise PolycascadeError(f"no answer: {result.stop_reason}" + (f" (after {failures})" if failures else ""))
        return ChatResult(generations=[ChatGeneration(message=_to_ai_message(result))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_sync(self._agenerate(messages, stop, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        result = await self._agenerate(messages, stop, **kwargs)
        for chunk in _chunks(result.generations[0].message):
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from _chunks(self._generate(messages, stop, **kwargs).generations[0].message)

    # features ----------------------------------------------------------------------------------
    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers validated against `schema` by the cascade (a failed check escalates), parsed: a
        pydantic model (v2 or v1) comes back as that model, a TypedDict or JSON schema as a dict."""
        model, to_result = as_checked_model(schema)
        kwargs.pop("method", None)  # one method: the cascade asks for JSON and checks it
        kwargs.pop("strict", None)
        traced = {"kwargs": {"method": "json_schema"}, "schema": json_schema_of(schema)}

        def parse(message: AIMessage) -> Any:
            parsed = message.additional_kwargs.get("parsed")
            if parsed is None:
                raise OutputParserException(f"no answer validated as {model.__name__}", llm_output=str(message.content))
            result = to_result(parsed)
            return {"raw": message, "parsed": result, "parsing_error": None} if include_raw else result

        bound = self.bind(response_schema=model, ls_structured_output_format=traced, **kwargs)
        return bound | RunnableLambda(parse)


def _to_message(m: BaseMessage) -> Message:
    role = _ROLES.get(m.type)
    if role is None:
        raise ValueError(f"PolycascadeChat cannot send a {m.type!r} message")
    content = m.content if isinstance(m.content, str) else "".join(
        part.get("text", "") if isinstance(part, dict) else str(part) for part in m.content
    )  # fmt: skip
    calls = tuple(ToolCall(c["id"] or "", c["name"], c["args"]) for c in getattr(m, "tool_calls", None) or ())
    return Message(role, content, tool_call_id=m.tool_call_id if isinstance(m, ToolMessage) else None, tool_calls=calls)  # type: ignore[arg-type]


def _to_ai_message(result: TaskResult) -> AIMessage:
    prompt, completion = result.usage
    return AIMessage(
        content=result.answer or "",
        tool_calls=[{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in result.tool_calls],
        usage_metadata={"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion},
        response_metadata={
            "model_name": result.model,
            "vendor": result.chosen.vendor if result.chosen else None,
            "cost_usd": str(result.total_cost),
            "call_id": result.call_id,
            "status": result.status,
            "stop_reason": result.stop_reason,
            "attempts": len(result.attempts),
        },
        additional_kwargs={"parsed": result.parsed} if result.parsed is not None else {},
    )


def _chunks(message: BaseMessage, size: int = 24) -> Iterator[ChatGenerationChunk]:
    """The checked answer, in pieces; tool calls, usage and metadata ride on the last one."""
    assert isinstance(message, AIMessage)
    text = message.content if isinstance(message.content, str) else ""
    for i in range(0, len(text), size):
        yield ChatGenerationChunk(message=AIMessageChunk(content=text[i : i + size]))
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            additional_kwargs=message.additional_kwargs,
        )
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
