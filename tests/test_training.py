"""A data class may require hosts that do not train on API inputs: known from a curated table or a
models file, unknown fails closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polycascade import Task
from polycascade.catalog import Catalog, ModelsFile, UserModel
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.ledger import MemoryLedger
from polycascade.policies.config import DataClassRule, Policy
from polycascade.testing import ScriptedServer

from .conftest import run_cli


def test_the_catalog_knows_what_hosts_do_with_inputs_and_forgets_it_for_another_endpoint(tmp_path: Path) -> None:
    catalog = Catalog.bundled()
    assert (catalog["gpt-4o-mini"].trains_on_inputs, catalog["gpt-4o-mini"].zero_data_retention) == (False, False)
    bedrock = catalog["jp.anthropic.claude-sonnet-4-5-20250929-v1:0"]
    assert (bedrock.trains_on_inputs, bedrock.zero_data_retention) == (False, True)
    assert catalog["deepseek/deepseek-chat"].trains_on_inputs is None  # not in the table: unknown
    assert catalog["gemini/gemini-2.5-flash-lite"].trains_on_inputs is None  # depends on the account's tier
    moved = catalog.with_models([UserModel(id="gpt-4o-mini", api_base="https://proxy.example/v1")])
    assert moved["gpt-4o-mini"].trains_on_inputs is None  # someone else's endpoint: unknown again
    declared = catalog.with_models([UserModel(id="deepseek/deepseek-chat", trains_on_inputs=False)])
    assert declared["deepseek/deepseek-chat"].trains_on_inputs is False  # a contract said so


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer(lambda req: f"answer from {req.model}").start()
    yield s
    s.stop()


async def test_a_class_requiring_no_training_skips_hosts_that_train_or_may(server: ScriptedServer) -> None:
    models = [
        server.model("a/trains", vendor="Acme", jurisdiction="US", input_per_mtok="0.1", trains_on_inputs=True),
        server.model("b/unknown", vendor="Bolt", jurisdiction="US", input_per_mtok="0.2"),
        server.model("c/clean", vendor="Core", jurisdiction="US", input_per_mtok="5", trains_on_inputs=False),
    ]
    catalog = Catalog.bundled().with_models(models)
    rule = DataClassRule(no_training_on_inputs=True)
    policy = Policy(name="p", models=[m.id for m in models], data_classes={"hr": rule, "public": DataClassRule()},
                    default_data_class="public")  # fmt: skip
    ledger = MemoryLedger()
    pool = [catalog[m.id] for m in models]
    cascade = Cascade(Gateway(catalog, ledger, RetryPolicy(max_attempts=1)), pool, governor=Governor(policy, ledger))
    result = await cascade.run(Task("評価面談の記録を要約", data_class="hr", max_tokens=50))
    assert result.attempts[0].model == "c/clean"  # the dearest, the only one known not to train
    rejected = result.attempts[0].decision["rejected"]
    assert rejected["a/trains"]["rule"] == "training" and "trains on API inputs" in rejected["a/trains"]["reason"]
    assert "unknown (fail closed)" in rejected["b/unknown"]["reason"]
    public = await cascade.run(Task("press release", data_class="public", max_tokens=50))
    assert public.attempts[0].model == "a/trains"  # a class that does not ask: the cheapest


def test_policy_check_counts_what_a_class_may_reach(tmp_path: Path) -> None:
    models = ModelsFile(models=[UserModel(id="deepseek/deepseek-chat", trains_on_inputs=False)])
    models.write(tmp_path / "models.yaml")
    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nmodels: [gpt-4o-mini, deepseek/deepseek-chat, gemini/gemini-2.5-flash-lite]\n"
                      "data_classes: {hr: {no_training_on_inputs: true}}\ndefault_data_class: hr\n")  # fmt: skip
    plain = run_cli("policy", "check", str(policy))
    assert "data class hr: 1 of 3 models allowed" in plain.stdout, plain.stdout  # gpt-4o-mini alone
    declared = run_cli("policy", "check", str(policy), "--models", str(tmp_path / "models.yaml"))
    assert "data class hr: 2 of 3 models allowed" in declared.stdout, declared.stdout
