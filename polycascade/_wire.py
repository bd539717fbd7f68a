"""OpenAI's chat-completions wire format as `serve` speaks it: requests validated field by field,
errors in OpenAI's shape, and the OpenAPI description of both (what `schemathesis` fuzzes).

A request that does not fit is the caller's fault: 400 `invalid_request_error` naming the field,
before anything is routed, reserved or sent.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .tasks import MAX_TOKENS
from .types import Message, ToolCall

__all__ = ["MAX_TOKENS", "ChatRequest", "error", "invalid", "openapi"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI's other parameters (temperature, user, …) are accepted


class ContentPart(_Open):
    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str = Field(min_length=1)
    arguments: str = Field("{}", json_schema_extra={"format": "json-object"})  # a JSON object, as text

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object")
        return value


class ToolCallIn(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None

    def to_message(self) -> Message:
        content = self.content if isinstance(self.content, str) else "".join(p.text or "" for p in self.content or ())
        calls = tuple(
            ToolCall(c.id, c.function.name, json.loads(c.function.arguments or "{}")) for c in self.tool_calls or ()
        )
        role = "system" if self.role == "developer" else self.role  # OpenAI's newer name for the system role
        return Message(role, content, tool_call_id=self.tool_call_id, tool_calls=calls)


class FunctionDef(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(_Open):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    """The body of POST /v1/chat/completions."""

    model: str = Field(min_length=1, description="a route of the policy, or a model of its pool")
    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolIn] | None = None
    metadata: dict[str, str] | None = None
    prefer: dict[str, Any] | None = Field(
        None,
        description="routing preferences (the OpenAI SDK's extra_body): max_latency_s, latency_percentile, "
        "sort, max_price_in, max_price_out, only_vendors, ignore_vendors, only_models; they narrow the policy",
    )

    @classmethod
    def parse(cls, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise ValueError(f"the body must be a JSON object, not {type(body).__name__}")
        return cls.model_validate(body)


def error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": kind, "param": param, "code": kind}}
    return web.json_response(payload, status=status)


def invalid(exc: ValidationError | ValueError) -> web.Response:
    """400 naming the first field at fault."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return error(400, f"{field}: {first['msg']}", "invalid_request_error", field)
    return error(400, str(exc), "invalid_request_error")


def openapi() -> dict[str, Any]:
    """OpenAPI 3.1 for the endpoints `serve` answers, with every status it can return."""
    schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = {**schema.pop("$defs", {}), "ChatRequest": schema, "Error": _ERROR, "Completion": _COMPLETION}
    errors = {str(s): _ref_response("Error", why) for s, why in _ERRORS.items()}
    chat_ok = {
        "description": "the checked answer (streamed as server-sent events when `stream` is true)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
                    "text/event-stream": {"schema": {"type": "string"}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "polycascade serve", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"tenantKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"tenantKey": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
                    },
                    "responses": {"200": chat_ok, **errors},
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "responses": {
                        "200": {"description": "routes and pool", "content": {"application/json": {"schema": _LIST}}},
                        "401": errors["401"],
                    },
                }
            },
        },
    }


def _ref_response(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


_ERRORS = {
    400: "the request does not fit (a field, a data class the policy does not define)",
    401: "no or unknown tenant key",
    403: "no model may take this data class",
    404: "unknown model or route",
    413: "body over 32 MB",
    429: "a budget would be exceeded",
    502: "every allowed vendor failed",
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"]}},
        "usage": {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"]},
    },
}
_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}},
}
