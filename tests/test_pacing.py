"""The pacer: spend tracks the target; on a step between two plans, it mixes them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from polycascade.graphs.cascade import CascadeSettings
from polycascade.policies.pacing import Pacer


def test_spending_the_target_leaves_the_value_where_it_is() -> None:
    pacer = Pacer(target=0.01, value=0.5)
    for _ in range(100):
        pacer.observe(0.01)
    assert pacer.value == pytest.approx(0.5) and pacer.mean_spend == pytest.approx(0.01)


def test_underspending_raises_the_value_and_overspending_lowers_it() -> None:
    cheap, dear = Pacer(target=0.01, value=0.5), Pacer(target=0.01, value=0.5)
    cheap.observe(0.0)
    dear.observe(0.05)
    assert cheap.value > 0.5 > dear.value
    assert dear.value == pytest.approx(0.5 * 2.718281828 ** (-4 * dear.gain))  # four targets' worth over


def test_on_a_step_between_two_plans_the_pacer_mixes_them_to_spend_the_target() -> None:
    """Below a value of 0.3 every task takes the cheap plan (half the target), at or above it the
    dear one (three times the target): spending the target means a fifth of tasks on the dear plan."""
    rng, target, step = random.Random(0), 0.002, 0.3
    pacer = Pacer(target=target, value=0.05)  # starts far below the step: it must climb first
    dear = 0
    tasks = 40_000
    for _ in range(tasks):
        on_dear = pacer.value >= step
        dear += on_dear
        pacer.observe((3.0 if on_dear else 0.5) * target * rng.uniform(0.5, 1.5))
    assert pacer.mean_spend == pytest.approx(target, rel=0.01)
    assert dear / tasks == pytest.approx(0.2, abs=0.01)
    assert pacer.value == pytest.approx(step, rel=0.05)


@pytest.mark.parametrize("target, value", [(0.0, 1.0), (0.01, 0.0), (-1.0, 1.0)])
def test_a_pacer_without_a_positive_target_and_value_is_refused(target: float, value: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(target=target, value=value)


def test_one_pacer_spans_the_cascades_a_service_makes_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polycascade.service import open_service

    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")  # the pool needs a model; nothing is called
    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nmodels: [gpt-4o-mini]\nrouting: {target_cost_usd: 0.002, answer_value_usd: 0.05}\n")
    with open_service(policy=policy, ledger=":memory:") as service:
        first, second = service.cascade(), service.cascade()
        assert first.pacer is not None and first.pacer is second.pacer  # one budget, not one per request
        assert (first.pacer.target, first.pacer.value) == (0.002, 0.05)
        assert service.cascade(settings=CascadeSettings()).pacer is None  # settings of its own: no target
