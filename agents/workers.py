"""Workers: turn a task into a model request, and ask a model."""

from __future__ import annotations

import json
import re

from polycascade.catalog import ModelSpec
from polycascade.completer import Completer
from polycascade.tasks import Task
from polycascade.types import CallContext, Completion, CompletionRequest, Message

__all__ = ["ask_model", "build_request", "extract_json"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def build_request(task: Task, spec: ModelSpec, context: CallContext) -> CompletionRequest:
    system = task.system
    json_schema = None
    if task.schema is not None:
        schema = task.schema.model_json_schema()
        instruction = f"Answer with one JSON object only, matching this JSON schema:\n{json.dumps(schema)}"
        system = f"{system}\n\n{instruction}" if system else instruction
        json_schema = schema if "json_schema" in spec.capabilities else None
    conversation = task.messages or (Message("user", task.prompt),)
    messages = ((Message("system", system),) if system else ()) + conversation
    return CompletionRequest(
        model=spec.id, messages=messages, max_tokens=task.max_tokens, json_schema=json_schema, tools=task.tools,
        timeout_s=task.timeout_s, context=context,
    )  # fmt: skip


async def ask_model(gateway: Completer, task: Task, spec: ModelSpec, context: CallContext) -> Completion:
    return await gateway.complete(build_request(task, spec, context))


def extract_json(text: str) -> str:
    """The JSON object in a reply: inside a ``` fence if there is one, else from the first '{' to the last '}'."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text.strip()
