"""An OpenAI-compatible endpoint in front of the cascade: `polycascade serve`.

    POST /v1/chat/completions   (streaming and not, tool calls)
    GET  /v1/models             (the policy's routes and its pool)

`model` is a route name from the policy (e.g. `cheap-adequate`) or a model of the pool. Every
call is authenticated (a bearer key per tenant), governed (residency, budgets, shares), recorded
in the ledger and explainable (`X-Polycascade-Call-Id`, `polycascade explain`). The data class
and task kind come from the route, or the `X-Polycascade-Data-Class` / `X-Polycascade-Task-Kind`
headers, or `metadata` in the body. An answer streams once it has been checked: a partial
answer cannot be verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._secrets import register_secret_env
from ._wire import ChatRequest, error, invalid, openapi
from .dashboard import add_dashboard
from .errors import BudgetExceeded, ConfigError, NoEligibleModel
from .service import Service
from .tasks import Preferences, Task, TaskResult
from .yamlfile import load_yaml_model

__all__ = ["TenantKeys", "build_app"]

KEY_ENV = "POLYCASCADE_GATEWAY_KEY"
_log = logging.getLogger("polycascade.server")


class _TenantKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    admin: bool = False  # the dashboard shows this key every tenant's calls

    @model_validator(mode="after")
    def _one_source(self) -> _TenantKey:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key_env (a variable's name) or key_sha256 (the key's digest)")
        return self


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: dict[str, _TenantKey]


@dataclass(frozen=True)
class TenantKeys:
    """Tenant by key digest. Keys themselves are never stored, logged or echoed."""

    digests: Mapping[str, str]  # tenant → sha256 hex of its key
    admins: frozenset[str] = frozenset()  # tenants whose key sees every tenant on the dashboard

    @classmethod
    def load(cls, path: Path | None) -> TenantKeys:
        if path is None:
            key = os.environ.get(KEY_ENV)
            if not key:
                raise ConfigError(
                    f"no gateway keys: pass --tenants FILE, or set {KEY_ENV} for a single tenant 'default'."
                )
            return cls({"default": _digest(key)}, frozenset({"default"}))  # the operator's own key
        digests = {}
        tenants = load_yaml_model(path, _TenantsFile, ConfigError).tenants
        for tenant, spec in tenants.items():
            if spec.key_sha256:
                digests[tenant] = spec.key_sha256
                continue
            register_secret_env(spec.key_env or "")
            key = os.environ.get(spec.key_env or "")
            if not key:
                raise ConfigError(f"{path}: tenant {tenant!r}: environment variable {spec.key_env} is not set.")
            digests[tenant] = _digest(key)
        return cls(digests, frozenset(t for t, spec in tenants.items() if spec.admin))

    def tenant_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = _digest(authorization.removeprefix("Bearer ").strip())
        found = None
        for tenant, digest in self.digests.items():  # compare with every digest: no early exit to time
            if hmac.compare_digest(offered, digest):
                found = tenant
        return found


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def build_app(service: Service, keys: TenantKeys) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_openai_errors])
    handlers = _Handlers(service, keys)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/v1/chat/completions", handlers.chat)
    app.router.add_get("/openapi.json", _openapi)
    add_dashboard(app, service.ledger, keys, service.policy)
    return app


MAX_BODY = 32 * 1024 * 1024
_HTTP_KINDS = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in OpenAI's shape: aiohttp's own (404, 405, 413) and, as a last resort, ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = f"body over {MAX_BODY // 2**20} MB" if exc.status == 413 else exc.reason
        response = error(exc.status, reason, _HTTP_KINDS.get(exc.status, "invalid_request_error"))
        if "Allow" in exc.headers:  # a 405 says which methods there are (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # a bug of ours: logged here, never a traceback to the caller
        _log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error; the server log has the details", "server_error")


async def _openapi(_: web.Request) -> web.Response:
    return web.json_response(openapi())


class _Handlers:
    def __init__(self, service: Service, keys: TenantKeys) -> None:
        self.service, self.keys = service, keys

    async def models(self, request: web.Request) -> web.Response:
        if self.keys.tenant_for(request.headers.get("Authorization")) is None:
            return error(401, "invalid or missing API key", "authentication_error")
        routes = [{"id": r, "object": "model", "owned_by": "polycascade-route"} for r in self.service.policy.routes]
        pool = [{"id": m.id, "object": "model", "owned_by": m.vendor} for m in self.service.pool]
        return web.json_response({"object": "list", "data": routes + pool})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        tenant = self.keys.tenant_for(request.headers.get("Authorization"))
        if tenant is None:
            return error(401, "invalid or missing API key", "authentication_error")
        try:
            body = ChatRequest.parse(await request.json())
        except (ValidationError, ValueError) as exc:  # JSONDecodeError is a ValueError
            return invalid(exc)
        try:
            task, pool = self._task(body, request.headers, tenant)
        except ConfigError as exc:
            if exc.parameter == "prefer":
                return error(400, str(exc), "invalid_request_error", "prefer")
            return error(404, str(exc), "model_not_found", "model")
        try:
            result = await self.service.cascade(pool).run(task)
        except BudgetExceeded as exc:
            return error(429, str(exc), "insufficient_quota")
        except ConfigError as exc:  # the caller's: e.g. a data class the policy does not define
            return error(400, str(exc), "invalid_request_error", exc.parameter)
        except NoEligibleModel as exc:
            return error(403, str(exc), "policy_denied")
        if result.status == "failed":
            upstream = any(a.error for a in result.attempts)
            return error(
                502 if upstream else 403, result.stop_reason, "upstream_error" if upstream else "policy_denied"
            )
        headers = {"X-Polycascade-Call-Id": _call_id(result)}
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return await _stream(request, result, headers, include_usage)
        return web.json_response(_completion(result), headers=headers)

    def _task(self, body: ChatRequest, headers: Mapping[str, str], tenant: str) -> tuple[Task, list[Any]]:
        name = body.model
        policy, metadata = self.service.policy, body.metadata or {}
        route = policy.routes.get(name)
        if route is not None:
            pool = self.service.resolve(route.models) if route.models else self.service.pool
        elif name in {m.id for m in self.service.pool}:
            pool = self.service.resolve([name])
        else:
            raise ConfigError(f"unknown model or route {name!r}; GET /v1/models lists them")
        messages = tuple(m.to_message() for m in body.messages)
        data_class = (
            (route.data_class if route else None)
            or headers.get("X-Polycascade-Data-Class")
            or metadata.get("data_class")
        )  # unset: the policy's default, applied by the cascade
        kind = (
            headers.get("X-Polycascade-Task-Kind") or metadata.get("task_kind") or (route.task_kind if route else None)
        )
        task = Task(
            prompt=next((m.content for m in reversed(messages) if m.role == "user"), ""),
            prefer=_preferences(route, body, headers),
            messages=messages,
            tools=tuple(t.model_dump(exclude_none=True) for t in body.tools or ()),
            kind=str(kind) if kind else None,
            data_class=str(data_class) if data_class else None,
            tenant=tenant,
            run_id=f"serve:{tenant}",
            max_tokens=body.max_tokens or body.max_completion_tokens or (route and route.max_tokens) or 1024,
        )
        return task, pool


def _preferences(route: Any, body: ChatRequest, headers: Mapping[str, str]) -> Preferences | None:
    """The route's preferences, narrowed by the request's (`prefer` in the body, or the
    `X-Polycascade-Prefer` header as JSON): a request can narrow what it gets, never widen it."""
    raw: Any = body.prefer
    if raw is None and (header := headers.get("X-Polycascade-Prefer")):
        try:
            raw = json.loads(header)
        except ValueError:
            raise ConfigError("the X-Polycascade-Prefer header must be a JSON object", parameter="prefer") from None
    requested = Preferences.parse(raw, "prefer")
    routed = Preferences.parse(route.prefer, "prefer") if route is not None else None
    return routed.narrowed(requested) if routed is not None else requested


def _call_id(result: TaskResult) -> str:
    return result.call_id or result.task_id


def _extension(result: TaskResult) -> dict[str, Any]:
    return {
        "call_id": _call_id(result),
        "status": result.status,
        "cost_usd": str(result.total_cost),
        "stop_reason": result.stop_reason,
        "attempts": [{**a.to_dict(), "error": a.error_kind} for a in result.attempts],  # never the vendor's words
    }


def _usage(result: TaskResult) -> dict[str, int]:
    prompt, completion = result.usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(result: TaskResult) -> str:
    return "tool_calls" if result.tool_calls else "stop"


def _completion(result: TaskResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.answer or None}
    if result.tool_calls:
        message["tool_calls"] = [c.to_openai() for c in result.tool_calls]
    return {
        "id": f"chatcmpl-{_call_id(result)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model or "",
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(result)}],
        "usage": _usage(result),
        "polycascade": _extension(result),
    }


async def _stream(request: web.Request, result: TaskResult, headers: dict[str, str], usage: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    base = {"id": f"chatcmpl-{_call_id(result)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": result.model or ""}  # fmt: skip

    async def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    text = result.answer or ""
    for i in range(0, len(text), 24):
        await send({"content": text[i : i + 24]})
    if result.tool_calls:
        await send({"tool_calls": [{"index": i, **c.to_openai()} for i, c in enumerate(result.tool_calls)]})
    await send({}, _finish(result), polycascade=_extension(result))
    if usage:
        await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(result)})}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


def serve_metrics(port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the gateway's app: Prometheus metrics at http://127.0.0.1:`port`/metrics
    for as long as it runs. Loopback only and without tenant keys: spend by every tenant and vendor
    is the operator's to see, not a tenant's (a collector on the host scrapes it)."""

    async def metrics(_: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def context(_: web.Application) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
        await runner.cleanup()

    return context
