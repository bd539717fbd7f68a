"""`capable`: a scripted responder that behaves as a capable chat model would, for suites that
check an integration rather than a model's wits (LangChain's standard tests, your own).

- with tools bound (and `tool_choice` not "none"), until a tool has answered: it calls the tool
  `tool_choice` names, else the one the prompt names, else the first, with arguments read from the
  prompt (`magic_function(3)` gives `{"input": 3}`) or made up to fit the tool's schema;
- asked for JSON (`response_format` json_schema or json_object): an object that fits the schema;
- otherwise a short answer that echoes the question, naming a tool's result when one came back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._scripted import Reply, ScriptedRequest

__all__ = ["capable", "example_of"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


def capable(req: ScriptedRequest) -> str | Reply:
    body, messages = req.body, req.messages
    tools = [t["function"] for t in body.get("tools") or () if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if tools and choice != "none" and not (messages and messages[-1].get("role") == "tool"):
        tool = _chosen_tool(tools, choice, req.prompt)
        return Reply(tool_calls=[{"name": tool["name"], "arguments": _arguments(tool, req.prompt)}])
    schema = _wanted_schema(body.get("response_format"))
    if schema is not None:
        return json.dumps(example_of(schema, req.prompt))
    if messages and messages[-1].get("role") == "tool":
        return f"The tool answered {_text(messages[-1].get('content'))}."
    return f"Here is my answer to: {req.prompt[:200]}" if req.prompt else "Hello! How can I help?"


def _chosen_tool(tools: list[dict[str, Any]], choice: Any, prompt: str) -> dict[str, Any]:
    if isinstance(choice, dict):
        named = choice.get("function", {}).get("name")
        return next((t for t in tools if t["name"] == named), tools[0])
    mentioned = [t for t in tools if t["name"] in prompt]
    return max(mentioned, key=lambda t: len(t["name"])) if mentioned else tools[0]


def _arguments(tool: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Numbers and quoted words in the prompt fill the tool's parameters in order; the rest are made up."""
    schema = tool.get("parameters") or {}
    call = re.search(re.escape(tool["name"]) + r"\(([^)]*)\)", prompt)
    given = _NUMBER.findall(call.group(1)) if call else _NUMBER.findall(prompt)
    quoted = [a or b for a, b in _QUOTED.findall(prompt)]
    args: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type")
        if kind in ("integer", "number") and given:
            value = given.pop(0)
            args[name] = int(float(value)) if kind == "integer" else float(value)
        elif kind == "string" and quoted:
            args[name] = quoted.pop(0)
        elif name in (schema.get("required") or ()) or kind is not None:
            args[name] = example_of(prop, prompt)
    return args


def _wanted_schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return dict(response_format.get("json_schema", {}).get("schema") or {"type": "object"})
    if response_format.get("type") == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def example_of(schema: dict[str, Any], prompt: str = "", defs: dict[str, Any] | None = None) -> Any:
    """A value that validates against a (simple) JSON schema: objects, arrays, scalars, enums, $refs, anyOf."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example_of(defs.get(schema["$ref"].split("/")[-1], {}), prompt, defs)
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example_of(options[0], prompt, defs)
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_of(prop, prompt, defs) for name, prop in properties.items()}
    if kind == "array":
        return [example_of(schema.get("items") or {"type": "string"}, prompt, defs)]
    numbers = _NUMBER.findall(prompt)
    scalars: dict[str, Any] = {
        "integer": int(float(numbers[0])) if numbers else 1,
        "number": float(numbers[0]) if numbers else 1.0,
        "boolean": True,
        "null": None,
    }
    return scalars.get(kind, (schema.get("description") or schema.get("title") or "an answer")[:60])


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")
