"""Per-request routing preferences: a latency bound learned from the ledger, an order, a price cap,
vendor and model lists — narrowing the policy, never widening it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade import Task
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.catalog import Catalog
from polycascade.errors import ConfigError
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.ledger import CallRecord, Ledger, new_call_id
from polycascade.policies.config import DataClassRule, Policy
from polycascade.policies.preferences import LatencyBook
from polycascade.tasks import Preferences
from polycascade.testing import ScriptedRequest, ScriptedServer

from .conftest import run_cli

# (id, vendor, jurisdiction, $/M in, recorded latencies: p95 about 3 s for the cheap one, 0.4 s for the fast)
SLOW_CHEAP = ("cn/slow-cheap", "DeepSeek", "CN", "0.1")
FAST_DEAR = ("us/fast-dear", "OpenAI", "US", "2")


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    async def respond(req: ScriptedRequest) -> str:
        await asyncio.sleep(0.3 if req.model == "slow-cheap" else 0.01)  # scaled down: the ledger holds the rest
        return f"answer from {req.model}"

    s = ScriptedServer(respond).start()
    yield s
    s.stop()


def setup(server: ScriptedServer, ledger: Ledger) -> tuple[Cascade, Catalog]:
    models = [server.model(i, vendor=v, jurisdiction=j, input_per_mtok=p, quality=0.8) for i, v, j, p in
              (SLOW_CHEAP, FAST_DEAR)]  # fmt: skip
    catalog = Catalog.bundled().with_models(models)
    policy = Policy(
        name="p", models=[m.id for m in models], routing={"threshold": 0.5, "max_rungs": 1},
        data_classes={"public": DataClassRule(), "confidential": DataClassRule(vendor_jurisdictions=["US", "JP"])},
        default_data_class="public",
    )  # fmt: skip
    gateway = Gateway(catalog, ledger, RetryPolicy(max_attempts=1))
    return Cascade(gateway, [catalog[m.id] for m in models], governor=Governor(policy, ledger)), catalog


async def recorded_history(ledger: Ledger) -> None:
    """Yesterday afternoon's calls, as the ledger keeps them: the cheap model slow, the dear one fast."""
    now = time.time()
    for i in range(40):
        for model, vendor, slow in ((SLOW_CHEAP[0], "DeepSeek", 1.0), (FAST_DEAR[0], "OpenAI", 0.0)):
            seconds = (1.5 + 1.6 * (i % 10) / 9) if slow else (0.15 + 0.25 * (i % 10) / 9)  # up to 3.1 s / 0.4 s
            await ledger.write(CallRecord(new_call_id(), model, vendor, "CN", "ok", node="attempt", task_kind="qa",
                                          latency_s=seconds, output_tokens=50, ts=now - 3600 + i))  # fmt: skip


async def test_a_latency_bound_routes_to_the_fast_model_and_cost_order_to_the_cheap(
    server: ScriptedServer, tmp_path: Path
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    await recorded_history(ledger)
    cascade, _ = setup(server, ledger)
    bound = await cascade.run(Task("Q", kind="qa", prefer=Preferences(max_latency_s=1.0)))
    assert bound.attempts[0].model == FAST_DEAR[0]
    denial = bound.attempts[0].decision["rejected"][SLOW_CHEAP[0]]
    assert denial["rule"] == "latency" and denial["values"]["percentile"] == "p95"
    assert denial["values"]["estimate_s"] > 2.5 and denial["values"]["max_latency_s"] == 1.0
    cheap = await cascade.run(Task("Q", kind="qa", prefer=Preferences(sort="cost")))
    assert cheap.attempts[0].model == SLOW_CHEAP[0]
    quick = await cascade.run(Task("Q", kind="qa", prefer=Preferences(sort="latency")))
    assert quick.attempts[0].model == FAST_DEAR[0] and "quickest expected" in quick.attempts[0].decision["reason"]
    await ledger.close()
    explained = run_cli("explain", bound.attempts[0].call_id, "--ledger", str(tmp_path / "ledger.db"))
    assert "latency" in explained.stdout and "p95 latency" in explained.stdout


async def test_a_request_cannot_unlock_what_the_policy_forbids(server: ScriptedServer, tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    cascade, _ = setup(server, ledger)
    asked = Preferences(only_vendors=frozenset({"deepseek"}))  # CN: confidential data may not go there
    result = await cascade.run(Task("契約書", data_class="confidential", prefer=asked))
    assert result.status == "failed" and server.count() == 0
    assert "residency" in result.stop_reason and "preference" in result.stop_reason
    priced = await cascade.run(Task("Q", prefer=Preferences(max_price_in=Decimal("1"))))
    assert priced.attempts[0].model == SLOW_CHEAP[0]
    ignored = await cascade.run(Task("Q", prefer=Preferences(ignore_vendors=frozenset({"deepseek"}))))
    assert ignored.attempts[0].model == FAST_DEAR[0]
    await ledger.close()


def test_preferences_parse_narrow_and_name_what_is_wrong() -> None:
    p = Preferences.parse({"max_latency_s": 2, "only_vendors": ["OpenAI", "Mistral"], "sort": "latency"})
    assert p is not None and p.only_vendors == {"openai", "mistral"}
    narrowed = p.narrowed(Preferences(max_latency_s=5, only_vendors=frozenset({"mistral", "google"})))
    assert narrowed.max_latency_s == 2 and narrowed.only_vendors == {"mistral"} and narrowed.sort == "latency"
    disjoint = p.narrowed(Preferences(only_vendors=frozenset({"google"})))
    assert disjoint.only_vendors == frozenset()  # nothing both allow: nothing is allowed
    with pytest.raises(ConfigError, match=r"`prefer.max_latency_s` must be a positive number"):
        Preferences.parse({"max_latency_s": -1})
    with pytest.raises(ConfigError, match=r"unknown preference\(s\) \['fastest'\]"):
        Preferences.parse({"fastest": True})


def test_a_slow_afternoon_is_forgotten() -> None:
    book, t0 = LatencyBook(half_life_s=3600), 1_800_000_000.0
    for i in range(50):
        book.observe("m", "qa", 3.0, 100, t0 + i)
    assert book.estimate("m", "qa", t0 + 60).p95 >= 3.0
    for i in range(40):
        book.observe("m", "qa", 0.3, 100, t0 + 6 * 3600 + i)  # six half-lives later
    later = book.estimate("m", "qa", t0 + 6 * 3600 + 60)
    assert later.p50 < 0.5 and later.p95 < 0.5 and later.tokens_per_s is not None
    assert book.estimate("other", "qa", t0).p95 == 8.0  # no history: the prior


def test_serve_takes_preferences_from_the_route_the_body_and_a_header(server: ScriptedServer, tmp_path: Path) -> None:
    import os

    import requests
    import yaml
    from openai import OpenAI

    from polycascade.catalog import ModelsFile

    from .conftest import serving

    db = tmp_path / "ledger.db"
    ledger = SQLiteLedger(db)
    asyncio.run(recorded_history(ledger))
    asyncio.run(ledger.close())
    models = [server.model(i, vendor=v, jurisdiction=j, input_per_mtok=p, quality=0.8) for i, v, j, p in
              (SLOW_CHEAP, FAST_DEAR)]  # fmt: skip
    ModelsFile(models=models).write(tmp_path / "models.yaml")
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
        "name": "p", "models": [m.id for m in models], "routing": {"max_rungs": 1},
        "data_classes": {"public": {}}, "default_data_class": "public",
        "routes": {"any": {"task_kind": "qa"}, "interactive": {"task_kind": "qa", "prefer": {"max_latency_s": 1}}},
    }))  # fmt: skip
    args = ["--policy", str(tmp_path / "policy.yaml"), "--models", str(tmp_path / "models.yaml"), "--ledger", str(db),
            "--no-local"]  # fmt: skip
    with serving(*args, env={**os.environ, "POLYCASCADE_GATEWAY_KEY": "k-123456789"}) as url:
        client = OpenAI(base_url=url, api_key="k-123456789")
        ask = [{"role": "user", "content": "Q"}]

        def answered_by(**kw: object) -> str:
            reply = client.chat.completions.create(messages=ask, **kw)  # type: ignore[call-overload]
            return str(reply.choices[0].message.content)

        assert answered_by(model="any") == "answer from slow-cheap"
        assert answered_by(model="any", extra_body={"prefer": {"max_latency_s": 1}}) == "answer from fast-dear"
        assert answered_by(model="interactive") == "answer from fast-dear"  # the route's own bound
        sorted_by_cost = {"prefer": {"sort": "cost"}}  # cannot lift the route's bound
        assert answered_by(model="interactive", extra_body=sorted_by_cost) == "answer from fast-dear"
        header = {"X-Polycascade-Prefer": '{"ignore_vendors": ["openai"]}'}
        assert answered_by(model="any", extra_headers=header) == "answer from slow-cheap"
        bad = requests.post(f"{url}/chat/completions", json={"model": "any", "messages": ask,
                            "prefer": {"max_latency_s": "soon"}},
                            headers={"Authorization": "Bearer k-123456789"}, timeout=30)  # fmt: skip
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "prefer"
        refused = requests.post(f"{url}/chat/completions", json={"model": "interactive", "messages": ask},
                                headers={"Authorization": "Bearer k-123456789", **header}, timeout=30)  # fmt: skip
        assert refused.status_code == 403 and "latency" in refused.json()["error"]["message"]  # both ruled out


def test_the_chat_model_takes_preferences(server: ScriptedServer, tmp_path: Path) -> None:
    from polycascade.agents.chat_model import PolycascadeChat

    models = [server.model(i, vendor=v, jurisdiction=j, input_per_mtok=p, quality=0.8) for i, v, j, p in
              (SLOW_CHEAP, FAST_DEAR)]  # fmt: skip
    catalog = Catalog.bundled().with_models(models)
    llm = PolycascadeChat(models=[m.id for m in models], catalog=catalog, prefer={"ignore_vendors": ["DeepSeek"]})
    assert llm.invoke("Q").content == "answer from fast-dear"
    assert llm.invoke("Q", prefer={"only_models": [SLOW_CHEAP[0]]}).content == "answer from slow-cheap"


def test_throughput_order_takes_the_adequate_model_with_the_most_tokens_per_second() -> None:
    from polycascade.policies.preferences import LatencyEstimate
    from polycascade.policies.routing import Need, RoutingSettings, choose

    from .conftest import make_spec

    pool = [make_spec("a/slow", "0.1", vendor="A"), make_spec("b/fast", "1", vendor="B")]
    latency = {"a/slow": LatencyEstimate(1.0, 2.0, 30, tokens_per_s=40.0),
               "b/fast": LatencyEstimate(1.0, 2.0, 30, tokens_per_s=400.0)}  # fmt: skip
    need = Need(input_tokens=100, max_tokens=100, prefer=Preferences(sort="throughput"), latency=latency)
    decision = choose(pool, need, {}, RoutingSettings())
    assert decision.chosen == "b/fast" and "400 tokens/s" in decision.reason
    assert choose(pool, Need(input_tokens=100, max_tokens=100), {}, RoutingSettings()).chosen == "a/slow"
