"""A scripted OpenAI-compatible server on 127.0.0.1 whose answers come from a Python function.

One server poses as any number of vendors: each vendor gets its own base URL
(`/<vendor>/v1`), so tests can assert exactly which vendor's endpoint received what bytes.
Faults (429 with Retry-After, 5xx, timeouts, malformed bodies, 400s) are answers like any other.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from ..catalog import Price, UserModel

__all__ = ["Fault", "Reply", "ScriptedRequest", "ScriptedServer", "approx_tokens"]


def approx_tokens(text: str) -> int:
    """About four characters a token, like most BPE tokenizers on English."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass(frozen=True)
class ScriptedRequest:
    vendor: str
    model: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def prompt(self) -> str:
        """The last user message."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None  # what the vendor bills; by default about four characters a token


@dataclass(frozen=True)
class Fault:
    status: int = 500
    kind: str = "status"  # status | timeout | malformed
    retry_after: float | None = None
    message: str = "scripted failure"
    delay_s: float = 0.0

    @classmethod
    def rate_limit(cls, retry_after: float | None = None) -> Fault:
        return cls(429, retry_after=retry_after, message="rate limit reached")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(status, message="internal error")

    @classmethod
    def bad_request(cls, message: str = "invalid request") -> Fault:
        return cls(400, message=message)

    @classmethod
    def context_window(cls) -> Fault:
        return cls(400, message="This model's maximum context length is 8192 tokens (context_length_exceeded)")

    @classmethod
    def timeout(cls, seconds: float = 30.0) -> Fault:
        return cls(kind="timeout", delay_s=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        return cls(200, kind="malformed")


Answer = str | Reply | Fault
Responder = Callable[[ScriptedRequest], Answer | Awaitable[Answer]]


class ScriptedServer:
    """Start with `with ScriptedServer(fn) as server:`; `server.url("deepseek")` is a base URL."""

    def __init__(self, responder: Responder, *, latency_s: float = 0.0) -> None:
        self.responder, self.latency_s = responder, latency_s
        self.requests: list[ScriptedRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="scripted-llm")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread:
                self._thread.join(10)
            self._runner = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{vendor}/v1/chat/completions", self._chat)
        app.router.add_get("/{vendor}/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self._loop.run_forever()

    # introspection ---------------------------------------------------------------------------
    def url(self, vendor: str = "default") -> str:
        return f"http://127.0.0.1:{self.port}/{vendor}/v1"

    def count(self, *, vendor: str | None = None, model: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (vendor is None or r.vendor == vendor) and (model is None or r.model == model)
            )

    def model(
        self,
        id: str,
        *,
        vendor: str,
        jurisdiction: str,
        input_per_mtok: float | str = 1,
        output_per_mtok: float | str = 2,
        quality: float | None = None,
        **extra: Any,
    ) -> UserModel:
        """A catalog entry for a model served here under the vendor's own base URL: the endpoint poses
        as the vendor's own, so it is hosted by the vendor in its jurisdiction unless `extra` says otherwise."""
        extra = {"host": vendor, "host_jurisdiction": jurisdiction, **extra}
        return UserModel(
            id=id,
            provider="openai",
            model=id.split("/")[-1],
            api_base=self.url(vendor.lower()),
            vendor=vendor,
            jurisdiction=jurisdiction,
            price=Price(input_per_mtok=Decimal(str(input_per_mtok)), output_per_mtok=Decimal(str(output_per_mtok))),
            quality=quality,
            **extra,
        )

    # handlers --------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        req = ScriptedRequest(
            vendor=request.match_info["vendor"],
            model=str(body.get("model", "")),
            body=body,
            raw=raw,
            headers=dict(request.headers),
            at=time.time(),
        )
        with self._lock:
            self.requests.append(req)
        answer = self.responder(req)
        if inspect.isawaitable(answer):
            answer = await answer
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(answer, Fault):
            return await _fault(answer)
        reply = answer if isinstance(answer, Reply) else Reply(text=str(answer))
        if body.get("stream"):
            return await _stream(request, req, reply)
        return web.json_response(_completion_body(req, reply))


async def _fault(fault: Fault) -> web.Response:
    if fault.kind == "timeout":
        await asyncio.sleep(fault.delay_s)
        return web.json_response({"error": {"message": "too late"}}, status=504)
    if fault.kind == "malformed":
        return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    error = {"error": {"message": fault.message, "type": "scripted", "code": str(fault.status)}}
    return web.json_response(error, status=fault.status, headers=headers)


def _usage(req: ScriptedRequest, reply: Reply) -> dict[str, int]:
    if reply.usage is not None:
        return reply.usage
    prompt = sum(approx_tokens(str(m.get("content") or "")) + 4 for m in req.messages)
    completion = approx_tokens(reply.text) + sum(approx_tokens(json.dumps(c)) for c in reply.tool_calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id", f"call_{uuid.uuid4().hex[:8]}"),
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
        }
        for call in reply.tool_calls
    ]


def _completion_body(req: ScriptedRequest, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls(reply)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else reply.finish_reason}
        ],
        "usage": _usage(req, reply),
    }


async def _stream(request: web.Request, req: ScriptedRequest, reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk", "model": req.model}

    async def send(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> None:
        chunk = {
            **base,
            "created": int(time.time()),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            chunk["usage"] = usage
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    for i in range(0, len(reply.text), 8):
        await send({"content": reply.text[i : i + 8]})
    if reply.tool_calls:
        await send({"tool_calls": [{"index": i, **c} for i, c in enumerate(_tool_calls(reply))]})
    await send({}, "tool_calls" if reply.tool_calls else reply.finish_reason, _usage(req, reply))
    await response.write(b"data: [DONE]\n\n")
    return response
