"""The gateway against a real HTTP server on 127.0.0.1: retries, errors, cost, ledger, guard."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from polycascade import errors
from polycascade.catalog import Catalog, UserModel
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.ledger import MemoryLedger
from polycascade.testing import Fault, Reply, ScriptedRequest, ScriptedServer
from polycascade.types import CallContext, CompletionRequest

FAST_RETRY = RetryPolicy(max_attempts=3, initial_s=0.01, max_backoff_s=0.05)


class Script:
    """Answers from a queue per prompt; when the queue is empty, answers 'ok'."""

    def __init__(self) -> None:
        self.queue: list[Fault | Reply | str] = []

    def __call__(self, req: ScriptedRequest) -> Fault | Reply | str:
        return self.queue.pop(0) if self.queue else "ok"


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[ScriptedServer]:
    with ScriptedServer(script) as s:
        yield s


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def gateway(server: ScriptedServer, ledger: MemoryLedger) -> Gateway:
    cheap = server.model(
        "acme/cheap", vendor="DeepSeek", jurisdiction="CN", input_per_mtok="0.14", output_per_mtok="0.28"
    )
    return Gateway(Catalog.bundled().with_models([cheap]), ledger, FAST_RETRY)


def ask(prompt: str = "What is 2+2?", **kw: object) -> CompletionRequest:
    return CompletionRequest.of("acme/cheap", prompt, **kw)  # type: ignore[arg-type]


async def test_retries_a_429_then_succeeds(
    gateway: Gateway, server: ScriptedServer, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.queue = [Fault.rate_limit(), "4"]
    with caplog.at_level(logging.INFO, logger="polycascade.gateway"):
        completion = await gateway.complete(ask())
    assert completion.text == "4"
    assert completion.attempts == 2
    assert server.count() == 2
    retries = [r.getMessage() for r in caplog.records if r.name == "polycascade.gateway"]
    assert len(retries) == 1 and retries[0].startswith("retrying acme/cheap in ")
    assert "RateLimited" in retries[0] and "attempt 1 of" in retries[0]


async def test_honours_retry_after(gateway: Gateway, script: Script) -> None:
    script.queue = [Fault.rate_limit(retry_after=0.3), "4"]
    started = time.perf_counter()
    await gateway.complete(ask())
    assert time.perf_counter() - started >= 0.3


async def test_gives_up_after_max_attempts_with_the_last_error(
    gateway: Gateway, server: ScriptedServer, script: Script, ledger: MemoryLedger
) -> None:
    script.queue = [Fault.server_error(503), Fault.server_error(502), Fault.rate_limit(), "never asked"]
    with pytest.raises(errors.RateLimited):
        await gateway.complete(ask())
    assert server.count() == FAST_RETRY.max_attempts == 3
    [row] = await ledger.calls()
    assert (row.outcome, row.attempts) == ("RateLimited", 3)


async def test_a_retry_after_past_the_calls_deadline_fails_now_instead_of_waiting(
    gateway: Gateway, server: ScriptedServer, script: Script
) -> None:
    script.queue = [Fault.rate_limit(retry_after=10), "too late to matter"]
    started = time.perf_counter()
    with pytest.raises(errors.RateLimited):  # 10 s of Retry-After would end past the deadline, 2 s away
        await gateway.complete(ask(deadline=time.monotonic() + 2.0))
    assert time.perf_counter() - started < 1.0 and server.count() == 1
    script.queue = [Fault.server_error(503), Fault.rate_limit(retry_after=10), "too late to matter"]
    with pytest.raises(errors.RateLimited):  # the same from a later attempt, inside tenacity
        await gateway.complete(ask(deadline=time.monotonic() + 2.0))
    assert server.count() == 3


async def test_retries_5xx_and_malformed_bodies(gateway: Gateway, server: ScriptedServer, script: Script) -> None:
    script.queue = [Fault.server_error(503), Fault.malformed(), "fine"]
    assert (await gateway.complete(ask())).text == "fine"
    assert server.count() == 3


async def test_does_not_retry_a_400(gateway: Gateway, server: ScriptedServer, script: Script) -> None:
    script.queue = [Fault.bad_request("unknown parameter 'foo'")]
    with pytest.raises(errors.RequestRejected, match="unknown parameter") as info:
        await gateway.complete(ask())
    assert not isinstance(info.value, errors.RetryableProviderError)
    assert server.count() == 1


async def test_context_window_error_is_its_own_type(gateway: Gateway, server: ScriptedServer, script: Script) -> None:
    script.queue = [Fault.context_window()]
    with pytest.raises(errors.ContextWindowExceeded):
        await gateway.complete(ask())
    assert server.count() == 1


async def test_timeout_is_retried_then_raised(gateway: Gateway, server: ScriptedServer, script: Script) -> None:
    script.queue = [Fault.timeout(3)] * 3
    started = time.perf_counter()
    with pytest.raises(errors.ProviderTimeout):
        await gateway.complete(ask(timeout_s=0.3))
    assert server.count() == FAST_RETRY.max_attempts
    assert time.perf_counter() - started < 2.5


async def test_gives_up_after_max_attempts(gateway: Gateway, server: ScriptedServer, script: Script) -> None:
    script.queue = [Fault.server_error()] * 5
    with pytest.raises(errors.ProviderUnavailable):
        await gateway.complete(ask())
    assert server.count() == 3


async def test_cost_is_tokens_times_catalog_price(gateway: Gateway) -> None:
    completion = await gateway.complete(ask("Name the capital of France.", max_tokens=20))
    spec = gateway.catalog["acme/cheap"]
    assert isinstance(completion.cost, Decimal)
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    expected = completion.usage.input_tokens * Decimal("0.14e-6") + completion.usage.output_tokens * Decimal("0.28e-6")
    assert completion.cost == expected == spec.cost(completion.usage.input_tokens, completion.usage.output_tokens)


async def test_every_call_writes_one_ledger_row(gateway: Gateway, ledger: MemoryLedger, script: Script) -> None:
    context = CallContext(run_id="r1", task_id="t1", node="attempt", task_kind="qa", decision={"chosen": "acme/cheap"})
    ok = await gateway.complete(ask(context=context))
    script.queue = [Fault.bad_request()]
    with pytest.raises(errors.RequestRejected):
        await gateway.complete(ask(context=context))
    rows = await ledger.calls(run_id="r1")
    assert len(rows) == 2
    good = await ledger.get(ok.call_id)
    assert good is not None
    assert (good.outcome, good.vendor, good.jurisdiction, good.task_kind) == ("ok", "DeepSeek", "CN", "qa")
    assert (good.input_tokens, good.output_tokens, good.cost) == (
        ok.usage.input_tokens,
        ok.usage.output_tokens,
        ok.cost,
    )
    assert good.decision == {"chosen": "acme/cheap"}
    assert {r.outcome for r in rows} == {"ok", "RequestRejected"}


async def test_tool_calls_are_parsed(gateway: Gateway, script: Script) -> None:
    script.queue = [Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "paris"}}])]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    completion = await gateway.complete(ask(tools=(tool,)))
    assert completion.tool_calls[0].name == "lookup"
    assert completion.tool_calls[0].arguments == {"q": "paris"}


async def test_the_guard_refuses_public_endpoints(ledger: MemoryLedger) -> None:
    gateway = Gateway(Catalog.bundled(), ledger)
    with pytest.raises(errors.NetworkGuardError, match="only loopback"):
        await gateway.complete(CompletionRequest.of("gpt-4o-mini", "hi"))
    remote = UserModel(
        id="acme/remote",
        provider="openai",
        api_base="https://10.1.2.3/v1",
        price={"input_per_mtok": 1, "output_per_mtok": 1},
    )
    gateway = Gateway(Catalog.bundled().with_models([remote]), ledger)
    with pytest.raises(errors.NetworkGuardError, match=r"10\.1\.2\.3"):
        await gateway.complete(CompletionRequest.of("acme/remote", "hi"))


async def test_keys_never_reach_error_text(
    server: ScriptedServer, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-canary-5f1b9c0d2e7a4b8c9d0e1f2a"
    monkeypatch.setenv("ACME_API_KEY", key)
    model = server.model("acme/keyed", vendor="OpenAI", jurisdiction="US", api_key_env="ACME_API_KEY")
    gateway = Gateway(Catalog.bundled().with_models([model]), retry=FAST_RETRY)
    script.queue = [Fault(401, message=f"Incorrect API key provided: {key[:20]}...{key[-4:]}")]
    with pytest.raises(errors.RequestRejected) as info:
        await gateway.complete(CompletionRequest.of("acme/keyed", "hi"))
    text = str(info.value)
    assert "credentials refused" in text
    assert not any(key[i : i + 8] in text for i in range(len(key) - 7))
    assert server.requests[0].headers["Authorization"] == f"Bearer {key}"  # the key did go to the vendor


def test_sync_wrapper_works_outside_and_inside_an_event_loop(gateway: Gateway) -> None:
    assert gateway.complete_sync(ask()).text == "ok"

    async def inside() -> str:
        return gateway.complete_sync(ask()).text

    assert asyncio.run(inside()) == "ok"


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_s=0.5, max_backoff_s=3.0, max_retry_after_s=10.0)
    plain = errors.ProviderUnavailable("down", model="m")
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)):
        waits = [policy.backoff_s(attempt, plain) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: workers that failed together do not retry together
    limited = errors.RateLimited("slow down", model="m", retry_after=7.0)
    assert policy.backoff_s(1, limited) == 7.0
    assert policy.backoff_s(1, errors.RateLimited("slow down", model="m", retry_after=600.0)) == 10.0
