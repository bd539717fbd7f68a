"""The one way out to a model: LiteLLM, with retries, typed errors, cost and a ledger row.

This is the only module that imports litellm, and `_call_litellm` is the single outbound call
site, where the network guard refuses any non-loopback address while tests run.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no fetch

import litellm
import litellm.exceptions as llm_errors
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from . import errors, telemetry
from ._secrets import RedactingFilter, protect_handlers, redact, register_secret, register_secret_env
from .catalog import Catalog, ModelSpec
from .completer import Completer, call_record
from .ledger import Ledger, new_call_id
from .sync import run_sync
from .types import Completion, CompletionRequest, ToolCall, Usage

__all__ = ["Completer", "Gateway", "RetryPolicy", "call_record", "loopback_only"]

litellm.telemetry = False
litellm.suppress_debug_info = True
litellm.drop_params = True
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "polycascade"):
    logging.getLogger(_name).addFilter(RedactingFilter())
protect_handlers()  # LiteLLM attaches handlers of its own at import


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one call on transient failures: jittered exponential backoff, Retry-After honoured.

    A vendor that asks for a longer wait than `max_retry_after_s` is not waited for: the call fails
    now and the cascade fails over to another vendor (waiting would only make the caller wait).
    """

    max_attempts: int = 4
    initial_s: float = 0.5
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 5.0

    def backoff_s(self, attempt: int, error: BaseException) -> float:
        """The wait after failed attempt number `attempt` (from 1): the vendor's Retry-After if it sent one."""
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            return float(min(hint, self.max_retry_after_s))  # a longer one is not waited for: `worth_waiting`
        ceiling = min(self.max_backoff_s, self.initial_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never above the cap

    def worth_waiting(self, error: BaseException) -> bool:
        hint = getattr(error, "retry_after", None)
        return hint is None or hint <= self.max_retry_after_s


_log = logging.getLogger("polycascade.gateway")


def _past(deadline: float | None, wait: float) -> bool:
    return deadline is not None and time.monotonic() + wait >= deadline


class _StopPast(stop_base):
    """Stop when the next wait would end past the deadline: better to fail over now than to wait in vain."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return _past(self.deadline, state.upcoming_sleep)


def _failure(state: RetryCallState) -> BaseException:
    error = state.outcome.exception() if state.outcome else None
    assert error is not None, "tenacity waits and stops only after a failure"
    return error


def _log_retry(model: str, sleep: float, error: BaseException, failed: int, attempts: int) -> None:
    _log.info("retrying %s in %.2f s after %s (attempt %d of %d)", model, sleep, type(error).__name__, failed, attempts)


def loopback_only() -> bool:
    """True while tests run (pytest sets PYTEST_CURRENT_TEST) or when POLYCASCADE_LOOPBACK_ONLY=1."""
    return os.environ.get("POLYCASCADE_LOOPBACK_ONLY") == "1" or "PYTEST_CURRENT_TEST" in os.environ


class Gateway:
    """Calls models through LiteLLM. `complete` is the async seam; `complete_sync` wraps it."""

    def __init__(self, catalog: Catalog, ledger: Ledger | None = None, retry: RetryPolicy | None = None) -> None:
        self.catalog, self.ledger, self.retry = catalog, ledger, retry or RetryPolicy()

    async def complete(self, request: CompletionRequest) -> Completion:
        spec = self.catalog[request.model]
        call_id, started, attempts = request.call_id or new_call_id(), time.perf_counter(), 0

        async def once() -> Completion:
            nonlocal attempts
            attempts += 1
            return _parse(await _call_litellm(spec, request), spec, call_id, started, attempts)

        with telemetry.call_span(spec, request) as span:
            try:
                completion = await self._retrying(once, spec.id, request.deadline)
            except errors.PolycascadeError as exc:
                telemetry.record_call(span, spec, request, time.perf_counter() - started, call_id, error=exc)
                await self._record(spec, request, call_id, started, attempts, type(exc).__name__)
                raise
            telemetry.record_call(span, spec, request, time.perf_counter() - started, call_id, completion)
        await self._record(spec, request, call_id, started, attempts, "ok", completion)
        return completion

    def missing_credentials(self, spec: ModelSpec) -> list[str]:
        """Environment variables a call to `spec` still needs; empty when it can be made."""
        if spec.api_key_env:
            return [] if os.environ.get(spec.api_key_env) else [spec.api_key_env]
        if spec.api_base:
            return []  # a private or local endpoint: its key, if any, is named by api_key_env
        status = litellm.validate_environment(spec.litellm_model)
        return [] if status.get("keys_in_environment") else list(status.get("missing_keys", []))

    def complete_sync(self, request: CompletionRequest) -> Completion:
        return run_sync(self.complete(request))

    async def _retrying(
        self, once: Callable[[], Awaitable[Completion]], model: str, deadline: float | None
    ) -> Completion:
        """`once` until it succeeds, on transient errors only: at most `max_attempts` times, and never a
        wait that would end past `deadline` (better to fail over now). The first attempt runs bare:
        only a retryable failure pays for tenacity's machinery."""
        try:
            return await once()
        except errors.RetryableProviderError as exc:
            failures = [exc]  # tenacity's first attempt replays this failure: one path decides every wait

        async def again() -> Completion:
            if failures:
                raise failures.pop()
            return await once()

        attempts = self.retry.max_attempts
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(errors.RetryableProviderError) & retry_if_exception(self.retry.worth_waiting),
            wait=lambda state: self.retry.backoff_s(state.attempt_number, _failure(state)),
            stop=stop_after_attempt(attempts) | _StopPast(deadline),
            before_sleep=lambda state: _log_retry(
                model, state.upcoming_sleep, _failure(state), state.attempt_number, attempts
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await again()
        raise AssertionError("unreachable: tenacity returns the result or re-raises the last error")

    async def _record(
        self,
        spec: ModelSpec,
        request: CompletionRequest,
        call_id: str,
        started: float,
        attempts: int,
        outcome: str,
        completion: Completion | None = None,
    ) -> None:
        if self.ledger is not None:
            latency = time.perf_counter() - started
            await self.ledger.write(call_record(spec, request, call_id, latency, attempts, outcome, completion))


def _check_network(spec: ModelSpec) -> None:
    if not loopback_only():
        return
    host = urlsplit(spec.api_base).hostname if spec.api_base else None
    if host is None or not _is_loopback(host):
        where = host or f"{spec.provider}'s public endpoint"
        raise errors.NetworkGuardError(
            f"refused to call {spec.id} at {where}: the network guard allows only loopback while "
            "tests run. Point the model's api_base at a local server (polycascade.testing)."
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(spec: ModelSpec) -> str | None:
    if spec.api_key_env:
        register_secret_env(spec.api_key_env)
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise errors.ConfigError(f"model {spec.id} needs the environment variable {spec.api_key_env} set.")
        register_secret(key)
        return key
    return "unused" if spec.api_base else None  # local servers need no key, but the client wants one


async def _call_litellm(spec: ModelSpec, request: CompletionRequest) -> Any:
    _check_network(spec)
    kwargs: dict[str, Any] = {
        "model": spec.litellm_model,
        "messages": [m.to_openai() for m in request.messages],
        "max_tokens": request.max_tokens,
        "timeout": request.timeout_s,
        "max_retries": 0,  # retries are ours: counted and bounded
        "num_retries": 0,
    }
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if (key := _api_key(spec)) is not None:
        kwargs["api_key"] = key
    if request.tools:
        kwargs["tools"] = list(request.tools)
    if request.json_schema is not None:
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": request.json_schema},
        }
    try:
        return await litellm.acompletion(**kwargs)
    except Exception as exc:  # every litellm failure becomes one of ours, scrubbed of secrets
        raise _translate(exc, spec) from None


def _translate(exc: Exception, spec: ModelSpec) -> errors.PolycascadeError:
    text = redact(str(exc))[:500]
    status = getattr(exc, "status_code", None)
    model = spec.id
    match exc:
        case llm_errors.ContextWindowExceededError():
            return errors.ContextWindowExceeded(
                f"prompt exceeds the {spec.context_window}-token context window: {text}", model=model, status=status
            )
        case llm_errors.ContentPolicyViolationError():
            return errors.ContentPolicyViolation(f"content refused by the vendor: {text}", model=model, status=status)
        case llm_errors.RateLimitError():
            return errors.RateLimited(text, model=model, status=429, retry_after=_retry_after(exc))
        case llm_errors.Timeout():
            return errors.ProviderTimeout(f"no answer in time: {text}", model=model)
        case llm_errors.AuthenticationError() | llm_errors.PermissionDeniedError():
            hint = f"check {spec.api_key_env}" if spec.api_key_env else "set the vendor's API key"
            return errors.RequestRejected(f"credentials refused ({hint}): {text}", model=model, status=status)
        case llm_errors.APIResponseValidationError():
            return errors.MalformedResponse(f"unparseable response: {text}", model=model, status=status)
        case llm_errors.BadRequestError() | llm_errors.NotFoundError() | llm_errors.UnprocessableEntityError():
            return errors.RequestRejected(f"request refused: {text}", model=model, status=status)
        case llm_errors.APIConnectionError() | llm_errors.InternalServerError() if _is_malformed_body(text):
            return errors.MalformedResponse(f"unparseable response: {text}", model=model, status=status)
        case llm_errors.APIConnectionError() | llm_errors.ServiceUnavailableError() | llm_errors.InternalServerError():
            return errors.ProviderUnavailable(text, model=model, status=status, retry_after=_retry_after(exc))
        case errors.PolycascadeError():
            return exc
        case _ if isinstance(status, int) and status >= 500:
            return errors.ProviderUnavailable(text, model=model, status=status, retry_after=_retry_after(exc))
        case _ if isinstance(status, int) and 400 <= status < 500:
            return errors.RequestRejected(f"request refused: {text}", model=model, status=status)
        case _:
            return errors.MalformedResponse(f"{type(exc).__name__}: {text}", model=model, status=status)


_JSON_DECODER = re.compile(  # what json.JSONDecodeError says, whoever wraps it (LiteLLM passes only the message)
    r"JSONDecodeError|Expecting (value|property name|',' delimiter|':' delimiter)|Unterminated string"
    r"|Extra data|Invalid (control character|\\escape)|json.*(decode|invalid)",
    re.IGNORECASE,
)


def _is_malformed_body(text: str) -> bool:
    return _JSON_DECODER.search(text) is not None


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _parse(response: Any, spec: ModelSpec, call_id: str, started: float, attempts: int) -> Completion:
    try:
        choice = response.choices[0]
        message = choice.message
        usage = Usage(int(response.usage.prompt_tokens), int(response.usage.completion_tokens))
        tool_calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=json.loads(c.function.arguments or "{}"))
            for c in (message.tool_calls or ())
        )
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise errors.MalformedResponse(f"response lacks {exc}", model=spec.id) from None
    return Completion(
        call_id=call_id,
        model=spec.id,
        vendor=spec.vendor,
        text=message.content or "",
        tool_calls=tool_calls,
        usage=usage,
        cost=spec.cost(usage.input_tokens, usage.output_tokens),
        latency_s=time.perf_counter() - started,
        attempts=attempts,
        finish_reason=choice.finish_reason,
    )
