"""Workers: turn a task into a model request, and ask a model."""

from __future__ import annotations

import json
import re
from typing import Any

from polycascade.catalog import ModelSpec
from polycascade.completer import Completer
from polycascade.tasks import Task
from polycascade.tokens import PromptSize, prompt_size
from polycascade.types import CallContext, Completion, CompletionRequest, Message

__all__ = ["ask_model", "build_request", "extract_json", "request_size"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def build_request(task: Task, spec: ModelSpec, context: CallContext) -> CompletionRequest:
    schema = task.schema.model_json_schema() if task.schema is not None else None
    json_schema = schema if schema is not None and "json_schema" in spec.capabilities else None
    return CompletionRequest(
        model=spec.id, messages=_messages(task, schema), max_tokens=task.max_tokens, json_schema=json_schema,
        tools=task.tools, timeout_s=task.timeout_s, context=context,
    )  # fmt: skip


def request_size(task: Task) -> PromptSize:
    """What any model's request for `task` sends, counted before one is chosen (the schema as if the
    model took it as a response format too: the larger case)."""
    if task.input_tokens is not None:  # known (a replay's recorded prompt)
        return PromptSize(task.input_tokens, task.input_tokens)
    schema = task.schema.model_json_schema() if task.schema is not None else None
    return prompt_size(_messages(task, schema), task.tools, schema)


def _messages(task: Task, schema: dict[str, Any] | None) -> tuple[Message, ...]:
    system = task.system
    if schema is not None:
        instruction = f"Answer with one JSON object only, matching this JSON schema:\n{json.dumps(schema)}"
        system = f"{system}\n\n{instruction}" if system else instruction
    conversation = task.messages or (Message("user", task.prompt),)
    return ((Message("system", system),) if system else ()) + conversation


async def ask_model(gateway: Completer, task: Task, spec: ModelSpec, context: CallContext) -> Completion:
    return await gateway.complete(build_request(task, spec, context))


def extract_json(text: str) -> str:
    """The JSON object in a reply: inside a ``` fence if there is one, else from the first '{' to the last '}'."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text.strip()
