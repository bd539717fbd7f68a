"""Policy files: presets load; bad files are refused with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from polycascade import PolicyError
from polycascade.policies.config import load_policy, preset_path

from .conftest import run_cli

PRESETS = ["balanced", "cost-first", "jp-enterprise"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_pass_policy_check(name: str) -> None:
    result = run_cli("policy", "check", str(preset_path(name)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_jp_enterprise_says_what_it_promises() -> None:
    loaded = load_policy("jp-enterprise")
    policy = loaded.policy
    assert policy.vendor_share is not None and policy.vendor_share.max_share == 0.4
    assert policy.vendor_share.window_hours == 24
    assert policy.vendor_spread is not None and policy.vendor_spread.min_vendors >= 3
    cn_vendors = {m.id for m in loaded.pool if m.jurisdiction == "CN"}
    assert cn_vendors, "the preset should show CN vendors being limited, not absent"
    from polycascade.policies.routing import Need
    from polycascade.policies.rules import residency_rule

    for data_class, rule in policy.data_classes.items():
        allowed = {m.id for m in loaded.pool if residency_rule(data_class, rule)(m, Need()) is None}
        if data_class != "public":
            assert not (allowed & cn_vendors), f"{data_class} may reach a CN vendor"
        if data_class == "confidential":
            assert all(m.host_jurisdiction in {"JP", "self"} for m in loaded.pool if m.id in allowed)


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    return f


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    f = _write(tmp_path, preset_path("balanced").read_text() + "\nbudgets: [1, 2\n")
    result = run_cli("policy", "check", str(f))
    assert result.returncode == 2
    assert f"{f.name}:" in result.stderr and "invalid YAML" in result.stderr


def test_wrong_type_names_file_line_and_field(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini]\nbudgets:\n  per_run_usd: lots\n")
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert f"{f}:4: field 'budgets.per_run_usd'" in str(info.value)


def test_negative_budget_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\nbudgets:\n  per_day_usd: -5\n")
    with pytest.raises(PolicyError, match=r"policy.yaml:3: field 'budgets.per_day_usd'.*greater than or equal to 0"):
        load_policy(f)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\nvendor_share:\n  max_shar: 0.4\n")
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert f"{f}:3: field 'vendor_share.max_shar': Extra inputs are not permitted" in str(info.value)
    assert "field 'vendor_share.max_share': Field required" in str(info.value)


def test_unknown_model_names_its_line_and_suggests(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\nmodels:\n  - gpt-4o-mini\n  - gpt-4o-minni\n")
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert f"{f}:4: field 'models.1'" in str(info.value) and "gpt-4o-mini" in str(info.value)


def test_vendor_spread_is_checked_when_the_policy_loads(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini, gpt-4.1]\nvendor_spread:\n  min_vendors: 3\n")
    with pytest.raises(PolicyError, match=r":4: field 'vendor_spread.min_vendors': tier 'all' has 1 vendor"):
        load_policy(f)


def test_an_unsatisfiable_share_cap_is_refused(tmp_path: Path) -> None:
    f = _write(
        tmp_path, "name: p\nmodels: [gpt-4o-mini, mistral/mistral-small-latest]\nvendor_share: {max_share: 0.4}\n"
    )
    with pytest.raises(PolicyError, match="cannot carry all the spend"):
        load_policy(f)


def test_bad_jurisdiction_code_and_default_class(tmp_path: Path) -> None:
    f = _write(tmp_path, "name: p\ndata_classes:\n  secret: {host_jurisdictions: [japan]}\n")
    with pytest.raises(PolicyError, match=r"unknown jurisdiction 'japan': use ISO 3166-1 alpha-2"):
        load_policy(f)
    f = _write(tmp_path, "name: p\ndata_classes:\n  secret: {}\n")
    with pytest.raises(PolicyError, match="default_data_class 'internal' is not among data_classes"):
        load_policy(f)


def test_a_policy_that_is_a_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r":1: expected a mapping"):
        load_policy(_write(tmp_path, "- name: p\n"))


def test_an_answer_value_reaches_the_router_and_a_bad_one_names_its_line(tmp_path: Path) -> None:
    from polycascade.graphs.cascade import CascadeSettings

    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini]\nrouting:\n  answer_value_usd: 0.05\n")
    assert CascadeSettings.from_policy(load_policy(f).policy).routing.answer_value == 0.05
    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini]\nrouting:\n  answer_value_usd: 0\n")
    with pytest.raises(PolicyError, match=r"policy.yaml:4: field 'routing.answer_value_usd'.*greater than 0"):
        load_policy(f)


def test_a_spend_target_reaches_the_router_and_a_bad_one_names_its_line(tmp_path: Path) -> None:
    from polycascade.graphs.cascade import Cascade, CascadeSettings

    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini]\nrouting:\n  target_cost_usd: 0.002\n")
    settings = CascadeSettings.from_policy(load_policy(f).policy)
    assert settings.routing.target_cost == 0.002 and settings.routing.by_worth
    pacer = Cascade(object(), [], settings=settings).pacer  # type: ignore[arg-type]
    assert pacer is not None and pacer.target == 0.002 and pacer.value == pytest.approx(0.04)  # from 20× the target
    f = _write(tmp_path, "name: p\nmodels: [gpt-4o-mini]\nrouting:\n  target_cost_usd: -1\n")
    with pytest.raises(PolicyError, match=r"policy.yaml:4: field 'routing.target_cost_usd'.*greater than 0"):
        load_policy(f)


def test_a_policy_extends_a_preset_field_by_field(tmp_path: Path) -> None:
    f = _write(tmp_path, "extends: jp-enterprise\nname: mine\ndata_classes: {public: {api: false}}\n"
               "budgets: {per_day_usd: 5}\n")  # fmt: skip
    policy = load_policy(f).policy
    preset = load_policy("jp-enterprise").policy
    assert policy.name == "mine" and policy.models == preset.models and policy.timezone == "Asia/Tokyo"
    assert policy.data_classes["public"].api is False  # this file's value
    assert policy.data_classes["customer"] == preset.data_classes["customer"]  # the preset's, untouched
    assert policy.budgets.per_day_usd == 5 and policy.budgets.per_run_usd == preset.budgets.per_run_usd
    missing = _write(tmp_path, "extends: no-such-preset\nname: x\n")
    with pytest.raises(PolicyError, match="no preset 'no-such-preset'"):
        load_policy(missing)
    (tmp_path / "mid.yaml").write_text("extends: jp-enterprise\nname: mid\n")
    chained = _write(tmp_path, "extends: mid.yaml\nname: x\n")
    with pytest.raises(PolicyError, match="extends another policy itself"):
        load_policy(chained)
