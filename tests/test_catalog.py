import json
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade.catalog import Catalog, UserModel, price_map_path
from polycascade.errors import CatalogError


def test_every_priced_chat_model_in_litellms_map_is_catalogued() -> None:
    raw = json.loads(price_map_path().read_text())
    priced_chat = {
        k
        for k, v in raw.items()
        if isinstance(v, dict)
        and v.get("mode") == "chat"
        and v.get("input_cost_per_token") is not None
        and v.get("output_cost_per_token") is not None
    }
    assert set(Catalog.bundled()) == priced_chat


def test_prices_are_exact_decimals_from_the_map() -> None:
    raw = json.loads(price_map_path().read_text())["deepseek/deepseek-chat"]
    spec = Catalog.bundled()["deepseek/deepseek-chat"]
    assert spec.input_price == Decimal(str(raw["input_cost_per_token"]))
    assert spec.output_price == Decimal(str(raw["output_cost_per_token"]))
    assert isinstance(spec.cost(1000, 10), Decimal)


@pytest.mark.parametrize(
    ("model_id", "vendor", "jurisdiction"),
    [
        ("deepseek/deepseek-chat", "DeepSeek", "CN"),
        ("gpt-4o-mini", "OpenAI", "US"),
        ("dashscope/qwen-max", "Alibaba", "CN"),
        ("zai/glm-4.5", "Zhipu", "CN"),
        ("mistral/mistral-large-latest", "Mistral", "FR"),
    ],
)
def test_makers_and_jurisdictions(model_id: str, vendor: str, jurisdiction: str) -> None:
    spec = Catalog.bundled()[model_id]
    assert (spec.vendor, spec.jurisdiction) == (vendor, jurisdiction)


def test_a_hosted_model_keeps_its_maker_and_records_its_host() -> None:
    spec = Catalog.bundled()["together_ai/deepseek-ai/DeepSeek-V3"]
    assert (spec.vendor, spec.jurisdiction) == ("DeepSeek", "CN")
    assert (spec.host, spec.host_jurisdiction) == ("Together AI", "US")
    assert spec.open_weights


def test_capabilities_come_from_the_map() -> None:
    spec = Catalog.bundled()["gpt-4o-mini"]
    assert {"tools", "json_schema", "vision"} <= spec.capabilities


def test_users_add_a_private_endpoint_and_override_a_model(tmp_path: Path) -> None:
    f = tmp_path / "models.yaml"
    f.write_text(
        "models:\n"
        "  - id: acme/private-gpt\n"
        "    provider: openai\n"
        "    model: gpt-4o-mini\n"
        "    api_base: https://llm.acme.example/v1\n"
        "    api_key_env: ACME_KEY\n"
        "    host: ACME\n"
        "    host_jurisdiction: JP\n"
        "    price: {input_per_mtok: 0.2, output_per_mtok: 0.8}\n"
        "  - id: gpt-4o-mini\n"
        "    quality: 0.75\n"
    )
    cat = Catalog.load(f)
    private = cat["acme/private-gpt"]
    assert (private.vendor, private.host, private.host_jurisdiction) == ("OpenAI", "ACME", "JP")
    assert private.input_price == Decimal("0.2") / 1_000_000
    assert private.litellm_model == "openai/gpt-4o-mini"
    assert cat["gpt-4o-mini"].quality == 0.75
    assert cat["gpt-4o-mini"].input_price == Catalog.bundled()["gpt-4o-mini"].input_price


def test_a_model_without_price_is_refused_unless_self_hosted() -> None:
    with pytest.raises(CatalogError, match="has no price"):
        Catalog.bundled().with_models([UserModel(id="acme/free", provider="openai")])
    spec = Catalog.bundled().with_models(
        [UserModel(id="acme/onprem", provider="openai", hosting="self_hosted", api_base="http://127.0.0.1:1/v1")]
    )["acme/onprem"]
    assert spec.input_price == spec.output_price == 0
    assert spec.host_jurisdiction == "self"


def test_models_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "models.yaml"
    f.write_text("models:\n  - id: a\n    provider: openai\n    price: {input_per_mtok: x, output_per_mtok: 1}\n")
    with pytest.raises(CatalogError) as info:
        Catalog.load(f)
    assert f"{f}:4: field 'models.0.price.input_per_mtok'" in str(info.value)


def test_models_file_refuses_an_inline_key(tmp_path: Path) -> None:
    f = tmp_path / "models.yaml"
    f.write_text("models:\n  - id: a\n    provider: openai\n    api_key_env: sk-live-0123456789abcdef\n")
    with pytest.raises(CatalogError, match="api_key_env"):
        Catalog.load(f)


def test_membership_and_get_do_not_raise() -> None:
    catalog = Catalog.bundled()
    assert "gpt-4o-mini" in catalog and "no-such-model" not in catalog
    assert catalog.get("no-such-model") is None


def test_unknown_model_suggests_near_names() -> None:
    with pytest.raises(CatalogError, match=r"Did you mean.*gpt-4o-mini"):
        Catalog.bundled()["gpt-4o-minni"]


def test_a_pasted_key_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    f = tmp_path / "models.yaml"
    f.write_text("models:\n  - id: a\n    provider: openai\n    api_key_env: sk-live-0123456789abcdef\n")
    with pytest.raises(CatalogError) as info:
        Catalog.load(f)
    assert "0123456789" not in str(info.value)


@pytest.mark.parametrize(
    ("model_id", "host_jurisdiction"),
    [
        ("jp.anthropic.claude-sonnet-4-6", "JP"),
        ("eu.anthropic.claude-sonnet-4-6", "EU"),
        ("global.anthropic.claude-sonnet-4-6", "??"),
        ("bedrock/ap-northeast-1/moonshotai.kimi-k2.5", "JP"),
        ("anthropic.claude-sonnet-4-6", "US"),
    ],
)
def test_region_pinned_deployments_record_where_data_goes(model_id: str, host_jurisdiction: str) -> None:
    spec = Catalog.bundled()[model_id]
    assert spec.host == "Amazon"
    assert spec.host_jurisdiction == host_jurisdiction
    assert spec.jurisdiction in {"US", "CN"}  # the maker's home is unchanged
