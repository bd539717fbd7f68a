"""The cascade graph against scripted vendors on 127.0.0.1, and once with the real local model."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal
from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from polycascade import EvaluatorConfigError, Task, TaskResult, cascade_node, run_task
from polycascade.agents.evaluators import LLMJudge, RuleCheck
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import Why
from polycascade.graphs.cascade import Cascade, CascadeSettings
from polycascade.ledger import MemoryLedger
from polycascade.testing import Fault, LocalModel

from .conftest import Vendors

QUESTION = "What is the capital of France?"


def make(vendors: Vendors, ledger: MemoryLedger | None = None, **settings: object) -> Cascade:
    catalog = vendors.catalog()
    gateway = Gateway(catalog, ledger or MemoryLedger(), RetryPolicy(max_attempts=2, initial_s=0.01))
    pool = [catalog[m] for m in ("v/cheap", "v/mid", "v/strong")]
    return Cascade(gateway, pool, evaluator=LLMJudge([catalog["v/judge"]]), settings=CascadeSettings(**settings))  # type: ignore[arg-type]


async def test_escalates_from_a_wrong_cheap_answer_and_records_every_call(vendors: Vendors) -> None:
    ledger = MemoryLedger()
    result = await make(vendors, ledger).run(Task(QUESTION, kind="geo", run_id="r1"))
    assert result.status == "verified"
    assert result.answer == "Paris"
    assert [(a.model, a.verdict.passed if a.verdict else None) for a in result.attempts] == [
        ("v/cheap", False),
        ("v/mid", True),
    ]
    assert "cheapest expected total" in (result.attempts[0].decision or {})["reason"]
    rows = await ledger.calls(run_id="r1")
    assert sorted(r.model for r in rows) == ["v/cheap", "v/judge", "v/judge", "v/mid"]
    answers = {r.model: r for r in rows if r.node == "attempt"}
    assert answers["v/cheap"].verdict is False and answers["v/mid"].verdict is True
    assert answers["v/cheap"].decision is not None and answers["v/cheap"].decision["chosen"] == "v/cheap"
    assert result.total_cost == sum((r.cost for r in rows), Decimal(0))


async def test_why_is_kept_unrendered_until_read_then_reads_as_the_decision(vendors: Vendors) -> None:
    ledger = MemoryLedger()
    result = await make(vendors, ledger).run(Task(QUESTION, kind="geo", run_id="why"))
    why = result.attempts[0].decision
    assert isinstance(why, Why) and why.rendered is None  # nothing read it: the cascade paid nothing to render it
    [row] = [r for r in await ledger.calls(run_id="why") if r.node == "attempt" and r.model == "v/cheap"]
    assert row.decision is why  # the ledger keeps the same record
    rendered = {**why.decision.to_dict(), "policy": why.policy, **why.reservation.to_dict()}
    assert why == rendered and dict(why) == rendered and why.rendered == rendered
    assert why["chosen"] == "v/cheap" and why["policy"] == "default" and Decimal(why["reserved_usd"]) > 0
    assert json.loads(json.dumps(dict(why))) == json.loads(json.dumps(rendered))
    assert pickle.loads(pickle.dumps(why)) == rendered


async def test_learns_to_skip_the_cheap_model_for_one_kind_only(vendors: Vendors) -> None:
    cascade = make(vendors)
    firsts = [(await cascade.run(Task(QUESTION, kind="geo"))).attempts[0].model for _ in range(4)]
    assert firsts[0] == "v/cheap"
    assert firsts[-1] == "v/mid", f"routing did not learn from failures: {firsts}"
    vendors.answers["cheap"] = "Paris"
    other = await cascade.run(Task(QUESTION, kind="trivia"))
    assert [a.model for a in other.attempts] == ["v/cheap"]
    assert other.status == "verified"


async def test_unverified_when_no_rung_passes(vendors: Vendors) -> None:
    vendors.answers = {"cheap": "Lyon", "mid": "Marseille", "strong": "Nice"}
    result = await make(vendors).run(Task(QUESTION))
    assert result.status == "unverified"
    assert [a.model for a in result.attempts] == ["v/cheap", "v/mid", "v/strong"]
    assert result.answer in {"Lyon", "Marseille", "Nice"}
    assert result.stop_reason.startswith("reached max_rungs") or "no eligible" in result.stop_reason


async def test_max_rungs_bounds_the_climb(vendors: Vendors) -> None:
    vendors.answers = {"cheap": "Lyon", "mid": "Marseille", "strong": "Nice"}
    result = await make(vendors, max_rungs=2).run(Task(QUESTION))
    assert len(result.attempts) == 2 and result.status == "unverified"
    assert result.stop_reason == "reached max_rungs=2"


async def test_cost_ceiling_stops_before_an_unaffordable_rung(vendors: Vendors) -> None:
    vendors.answers = {"cheap": "Lyon", "mid": "Marseille", "strong": "Paris"}
    result = await make(vendors).run(Task(QUESTION, cost_ceiling=Decimal("0.0012"), max_tokens=100))
    assert [a.model for a in result.attempts] == ["v/cheap", "v/mid"]
    assert "cost ceiling" in result.stop_reason
    assert result.total_cost <= Decimal("0.0012")


async def test_a_failing_vendor_fails_over(vendors: Vendors) -> None:
    def cheap_down(req):  # type: ignore[no-untyped-def]
        return Fault.server_error(503) if req.model == "cheap" else original(req)

    original = vendors.server.responder
    vendors.server.responder = cheap_down
    result = await make(vendors).run(Task(QUESTION))
    assert result.attempts[0].model == "v/cheap" and result.attempts[0].error is not None
    assert "ProviderUnavailable" in result.attempts[0].error
    assert result.status == "verified" and result.answer == "Paris"


async def test_the_judge_may_not_share_the_answers_vendor(vendors: Vendors) -> None:
    catalog = vendors.catalog()
    gateway = Gateway(catalog, MemoryLedger())
    same_vendor_judge = LLMJudge([catalog["v/cheap"]])  # DeepSeek judging DeepSeek
    cascade = Cascade(gateway, [catalog["v/cheap"]], evaluator=same_vendor_judge)
    with pytest.raises(EvaluatorConfigError, match="may not grade its own vendor"):
        await cascade.run(Task(QUESTION))
    assert vendors.server.count(model="cheap") == 1  # answered once, never judged by itself
    two_judges = LLMJudge([catalog["v/cheap"], catalog["v/judge"]])
    result = await Cascade(gateway, [catalog["v/cheap"]], evaluator=two_judges).run(Task(QUESTION))
    assert result.attempts[0].verdict is not None and "v/judge" in result.attempts[0].verdict.reason


async def test_schema_failures_escalate_and_the_answer_is_parsed(vendors: Vendors) -> None:
    class Capital(BaseModel):
        city: str
        country: str

    vendors.answers = {
        "cheap": "Paris, France",
        "mid": '```json\n{"city": "Paris", "country": "France"}\n```',
        "strong": "x",
    }
    catalog = vendors.catalog()
    cascade = Cascade(Gateway(catalog, MemoryLedger()), [catalog["v/cheap"], catalog["v/mid"]])
    result = await cascade.run(Task(QUESTION, schema=Capital))
    assert [a.model for a in result.attempts] == ["v/cheap", "v/mid"]
    assert result.status == "verified"
    assert result.parsed == Capital(city="Paris", country="France")
    first = vendors.server.requests[0].messages[0]
    assert first["role"] == "system" and '"city"' in first["content"]


async def test_rules_compose_with_the_judge(vendors: Vendors) -> None:
    vendors.answers = {"cheap": "Paris!!!", "mid": "Paris", "strong": "Paris"}
    catalog = vendors.catalog()
    from polycascade.agents.evaluators import AllOf

    no_shouting = RuleCheck([lambda a: "!" not in a or "no exclamation marks"])
    evaluator = AllOf([no_shouting, LLMJudge([catalog["v/judge"]])])
    cascade = Cascade(Gateway(catalog, MemoryLedger()), [catalog[m] for m in ("v/cheap", "v/mid")], evaluator=evaluator)
    result = await cascade.run(Task(QUESTION))
    assert [a.model for a in result.attempts] == ["v/cheap", "v/mid"]
    assert result.attempts[0].verdict is not None and "no exclamation marks" in result.attempts[0].verdict.reason
    assert vendors.server.count(model="judge") == 1  # the rule failed first: no judge call wasted


def test_run_task_and_cascade_node_in_a_users_graph(vendors: Vendors) -> None:
    catalog = vendors.catalog()
    judge = LLMJudge([catalog["v/judge"]])
    result = run_task(QUESTION, ["v/cheap", "v/mid"], catalog=catalog, evaluator=judge)
    assert result.status == "verified" and result.answer == "Paris"

    class State(TypedDict, total=False):
        question: str
        result: TaskResult

    builder = StateGraph(State)
    builder.add_node(
        "answer", cascade_node(["v/cheap", "v/mid"], catalog=catalog, evaluator=judge, input_key="question")
    )
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    state = builder.compile().invoke({"question": QUESTION})
    assert state["result"].answer == "Paris"


async def test_the_real_local_model_as_first_rung(vendors: Vendors, local_model: LocalModel) -> None:
    catalog = vendors.catalog().with_models([local_model.spec])
    local = catalog[local_model.spec.id]
    pool = [local, catalog["v/mid"]]
    gateway = Gateway(catalog, MemoryLedger())
    # the local model is free: with a prior of 0.6 it is the cheapest adequate first rung
    from dataclasses import replace

    pool[0] = replace(local, quality=0.6)
    result = await Cascade(gateway, pool, evaluator=LLMJudge([catalog["v/judge"]])).run(
        Task("What is the capital of France? Answer in one word.", max_tokens=16)
    )
    assert result.attempts[0].model == local.id
    assert result.attempts[0].answer  # real text from SmolLM2
    assert result.attempts[0].cost == 0
    assert result.status == "verified"  # either SmolLM2 said Paris, or the cascade escalated to mid
    assert result.answer is not None and "Paris" in result.answer


async def test_the_result_names_the_attempt_it_returns_even_when_an_earlier_rung_scored_best(vendors: Vendors) -> None:
    vendors.answers = {"cheap": "Lyon", "mid": "Marseille", "strong": "Nice"}
    scores = {"Lyon": 6, "Marseille": 2, "Nice": 1}  # all below the judge's 7/10: none passes

    def judge_by_answer(req):  # type: ignore[no-untyped-def]
        if req.model == "judge":
            answer = req.prompt.split("<answer>")[-1].split("</answer>")[0].strip()
            return f"SCORE: {scores[answer]}"
        return vendors.answers[req.model]

    vendors.server.responder = judge_by_answer
    result = await make(vendors).run(Task(QUESTION))
    assert result.status == "unverified" and [a.model for a in result.attempts] == ["v/cheap", "v/mid", "v/strong"]
    assert result.chosen is result.attempts[0]
    assert (result.answer, result.model, result.call_id) == ("Lyon", "v/cheap", result.attempts[0].call_id)


def test_without_a_pass_the_likelier_answer_stands_and_any_answer_beats_a_blank() -> None:
    from polycascade.graphs.cascade import finish
    from polycascade.tasks import Attempt, Verdict

    disagrees = Verdict(False, 0.0, "disagrees with every earlier answer", "consensus", teaches=False)
    first = Verdict(False, 0.5, "no answer from another vendor yet", "consensus", verifies=False)

    def answered(rung: int, model: str, answer: str, p: float, verdict: Verdict) -> Attempt:
        return Attempt(rung, model, model.upper(), Decimal("0.001"), answer, verdict=verdict, p_pass=p)

    attempts = [
        answered(1, "strong", "B", 0.8, first),
        answered(2, "weak", "C", 0.5, disagrees),  # later, but rated less likely to be right
        answered(3, "mute", " ", 0.9, disagrees),  # rated highest, but said nothing
    ]
    result: TaskResult = finish({"task": Task("q"), "attempts": attempts}, None)["result"]  # type: ignore[arg-type]
    assert result.model == "strong" and result.answer == "B" and result.status == "unverified"
    # routed by plans by worth, each plan counted on the latest answer standing: so it does (never a blank)
    by_plan = {"task": Task("q"), "attempts": attempts, "by_plan": True}
    result = finish(by_plan, None)["result"]  # type: ignore[arg-type]
    assert result.model == "weak" and result.answer == "C"


def test_direct_stepping_merges_updates_with_the_reducers_the_graph_declares() -> None:
    import operator

    from polycascade.graphs.cascade import REDUCERS
    from polycascade.graphs.state import apply_update

    assert {"attempts": operator.add} == REDUCERS  # read from CascadeState's Annotated fields, not listed by hand
    state: dict[str, object] = {}
    apply_update(state, {"attempts": ["a"], "stop_reason": "first"}, REDUCERS)
    apply_update(state, {"attempts": ["b"], "stop_reason": "second"}, REDUCERS)
    assert state == {"attempts": ["a", "b"], "stop_reason": "second"}


async def test_direct_stepping_and_the_graph_give_the_same_escalation(vendors: Vendors) -> None:
    via_graph = await make(vendors).run(Task(QUESTION, kind="geo", id="same"))
    direct = await make(vendors).run_direct(Task(QUESTION, kind="geo", id="same"))
    summary = [(a.model, a.answer, a.verdict.passed if a.verdict else None) for a in via_graph.attempts]
    assert summary == [(a.model, a.answer, a.verdict.passed if a.verdict else None) for a in direct.attempts]
    assert (direct.status, direct.answer, direct.total_cost) == (
        via_graph.status,
        via_graph.answer,
        via_graph.total_cost,
    )
