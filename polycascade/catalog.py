"""The model catalog: every chat model LiteLLM prices, typed, with vendor, jurisdiction and host.

Prices come from LiteLLM's bundled price map, read as a file (importing litellm would fetch a
remote copy unless `LITELLM_LOCAL_MODEL_COST_MAP` is set, and costs a second of start-up).
A curated table (`data/vendors.yaml`) names each model's maker, its home jurisdiction and host.
Users add or override models with a YAML models file (see `ModelsFile`).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._secrets import register_secret_env
from .errors import CatalogError
from .jurisdictions import jurisdiction_code
from .yamlfile import load_located

__all__ = [
    "LOCAL_MODEL_ID",
    "Catalog",
    "ModelSpec",
    "ModelsFile",
    "UserModel",
    "jurisdiction_of_vendor",
    "local_model_spec",
]

Hosting = Literal["api", "self_hosted"]
Capability = Literal["tools", "json_schema", "vision", "reasoning"]
MILLION = Decimal(1_000_000)
UNKNOWN_JURISDICTION = "??"  # denied by every residency rule, `*` included

_CAPABILITY_FLAGS: dict[str, Capability] = {
    "supports_function_calling": "tools",
    "supports_response_schema": "json_schema",
    "supports_vision": "vision",
    "supports_reasoning": "reasoning",
}
_OPEN_WEIGHTS = re.compile(
    r"llama|mixtral|mistral-7b|mistral-nemo|open-mistral|qwen|deepseek|gemma|phi-|(^|[/.-])yi-|glm|"
    r"kimi-k2|smollm|command-r|falcon|granite|nemotron|gpt-oss|olmo|internlm|minimax-m",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One callable model. Prices are USD per token."""

    id: str
    provider: str
    litellm_model: str
    vendor: str
    jurisdiction: str
    host: str
    host_jurisdiction: str
    hosting: Hosting
    open_weights: bool
    input_price: Decimal
    output_price: Decimal
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str] = frozenset()
    api_base: str | None = None
    api_key_env: str | None = None
    quality: float | None = None
    trains_on_inputs: bool | None = None  # the host's terms for API inputs; None: unknown
    zero_data_retention: bool | None = None  # the host keeps no prompt or answer; None: unknown

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        return input_tokens * self.input_price + output_tokens * self.output_price

    def price_per_mtok(self) -> tuple[Decimal, Decimal]:
        return (self.input_price * MILLION).normalize(), (self.output_price * MILLION).normalize()


LOCAL_MODEL_ID = "local/smollm2-135m-instruct"


def local_model_spec(api_base: str | None = None, context_window: int = 2048) -> ModelSpec:
    """The free on-premises rung. `api_base` is set once `polycascade.testing.LocalModel` serves it."""
    return ModelSpec(
        id=LOCAL_MODEL_ID,
        provider="openai",
        litellm_model="openai/smollm2-135m-instruct",
        vendor="Hugging Face",
        jurisdiction="US",
        host="self",
        host_jurisdiction="self",
        hosting="self_hosted",
        open_weights=True,
        input_price=Decimal(0),
        output_price=Decimal(0),
        context_window=context_window,
        max_output_tokens=context_window,
        api_base=api_base,
        quality=0.2,
    )


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)


class UserModel(BaseModel):
    """A model declared or overridden in a models file. Unset fields keep the catalog's values."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    provider: str | None = None
    model: str | None = Field(None, description="name at the endpoint; defaults to the id")
    api_base: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    vendor: str | None = None
    jurisdiction: str | None = None
    host: str | None = None
    host_jurisdiction: str | None = None
    hosting: Hosting | None = None
    open_weights: bool | None = None
    price: Price | None = None
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    capabilities: list[Capability] | None = None
    quality: float | None = Field(None, ge=0, le=1)
    trains_on_inputs: bool | None = Field(None, description="whether the endpoint's terms let it train on inputs")
    zero_data_retention: bool | None = Field(None, description="whether the endpoint keeps no prompt or answer")

    @field_validator("jurisdiction", "host_jurisdiction")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        return None if value is None else jurisdiction_code(value)

    @model_validator(mode="after")
    def _key_is_a_name(self) -> UserModel:
        if self.api_key_env is not None and len(self.api_key_env) > 64:
            raise ValueError("api_key_env names an environment variable; never put the key itself here")
        if self.api_key_env is not None:
            register_secret_env(self.api_key_env)  # whatever it is called, its value is never shown
        return self


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[UserModel] = Field(default_factory=list)

    def write(self, path: Path) -> Path:
        """Save as YAML that `Catalog.load` reads back (unset fields left out)."""
        entries = [m.model_dump(mode="json", exclude_none=True) for m in self.models]
        path.write_text(yaml.safe_dump({"models": entries}, allow_unicode=True), encoding="utf-8")
        return path


class Catalog(Mapping[str, ModelSpec]):
    """An immutable set of models by id. `Catalog.bundled()` is LiteLLM's map; `with_models` adds."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs = {s.id: s for s in specs}

    @classmethod
    def bundled(cls) -> Catalog:
        return _bundled_catalog()

    @classmethod
    def load(cls, models_file: str | Path | None = None) -> Catalog:
        """The bundled catalog, the local rung, and the models file's additions and overrides."""
        catalog = cls.bundled().with_models([local_model_spec()])
        if models_file is not None:
            doc = load_located(models_file, ModelsFile, CatalogError)
            first: dict[str, int] = {}
            for i, m in enumerate(doc.value.models):
                if m.id in first:
                    raise CatalogError(
                        f"{doc.where('models', i)}: field 'models.{i}.id': {m.id!r} is declared twice "
                        f"(first at {doc.where('models', first[m.id])}); declare each model once"
                    )
                first[m.id] = i
            catalog = catalog.with_models(doc.value.models)
        return catalog

    def with_models(self, models: Iterable[UserModel | ModelSpec]) -> Catalog:
        specs = dict(self._specs)
        for m in models:
            spec = m if isinstance(m, ModelSpec) else _apply(specs.get(m.id), m)
            specs[spec.id] = spec
        return Catalog(specs.values())

    def __getitem__(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            near = difflib.get_close_matches(model_id, self._specs, n=3)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            raise CatalogError(
                f"unknown model {model_id!r}.{hint} Add it to a models file (id, provider, price)."
            ) from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def get(self, model_id: str, default: ModelSpec | None = None) -> ModelSpec | None:  # type: ignore[override]
        return self._specs.get(model_id, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def select(
        self,
        *,
        vendor: str | None = None,
        jurisdiction: str | None = None,
        provider: str | None = None,
        capability: str | None = None,
    ) -> list[ModelSpec]:
        def keep(s: ModelSpec) -> bool:
            return (
                (vendor is None or s.vendor.lower() == vendor.lower())
                and (jurisdiction is None or s.jurisdiction.upper() == jurisdiction.upper())
                and (provider is None or s.provider == provider)
                and (capability is None or capability in s.capabilities)
            )

        return sorted((s for s in self._specs.values() if keep(s)), key=lambda s: s.id)


@dataclass(frozen=True)
class _VendorTable:
    makers: list[tuple[re.Pattern[str], str, str]]
    providers: dict[str, dict[str, str]] = field(default_factory=dict)
    region_prefixes: dict[str, str] = field(default_factory=dict)
    aws_regions: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def inputs_of(self, provider: str) -> dict[str, bool | None]:
        """What the provider's standard API terms say about inputs: trained on, retained (None: unknown)."""
        info = self.inputs.get(provider, {})
        return {"trains_on_inputs": info.get("trains"), "zero_data_retention": info.get("zero_retention")}

    def maker_of(self, model_id: str, provider: str) -> tuple[str, str]:
        info = self.providers.get(provider, {})
        for pattern, vendor, country in self.makers:
            if pattern.search(model_id):
                return vendor, country
        if "maker" in info:
            return info["maker"], info["jurisdiction"]
        return "unknown", UNKNOWN_JURISDICTION

    def host_of(self, provider: str, model_id: str = "") -> tuple[str, str]:
        info = self.providers.get(provider)
        host, country = (info["host"], info["jurisdiction"]) if info else (provider, UNKNOWN_JURISDICTION)
        return host, self._region(model_id) or country

    def _region(self, model_id: str) -> str | None:
        name = model_id.split("/", 1)[1] if model_id.startswith("bedrock") and "/" in model_id else model_id
        for segment in model_id.split("/"):
            if segment in self.aws_regions:
                return self.aws_regions[segment]
        return next((c for p, c in self.region_prefixes.items() if name.startswith(p)), None)


@lru_cache(maxsize=1)
def _vendor_table() -> _VendorTable:
    raw = yaml.safe_load((Path(__file__).parent / "data" / "vendors.yaml").read_text(encoding="utf-8"))
    makers = [(re.compile(m["pattern"], re.IGNORECASE), m["vendor"], m["jurisdiction"]) for m in raw["makers"]]
    regions = raw.get("regions", {})
    inputs = {provider: info for info in raw.get("inputs", []) for provider in info["providers"]}
    return _VendorTable(makers, raw["providers"], regions.get("prefixes", {}), regions.get("aws", {}), inputs)


def jurisdiction_of_vendor(vendor: str) -> str | None:
    """The home jurisdiction of a vendor named in the curated table (case-insensitive), if any."""
    wanted = vendor.strip().lower()
    table = _vendor_table()
    known = {v.lower(): c for _, v, c in table.makers}
    known.update({info["maker"].lower(): info["jurisdiction"] for info in table.providers.values() if "maker" in info})
    return known.get(wanted)


def price_map_path() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError("litellm is not installed; install polycascade's dependencies.")
    return Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"


@lru_cache(maxsize=1)
def _bundled_catalog() -> Catalog:
    entries = json.loads(price_map_path().read_text(encoding="utf-8"))
    table = _vendor_table()
    return Catalog(spec for key, entry in entries.items() if (spec := _from_price_map(key, entry, table)) is not None)


def _from_price_map(key: str, entry: Any, table: _VendorTable) -> ModelSpec | None:
    if not isinstance(entry, dict) or entry.get("mode") != "chat":
        return None
    if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
        return None  # unpriced entries cannot be used: an unknown price is never guessed
    provider = str(entry.get("litellm_provider", ""))
    vendor, country = table.maker_of(key, provider)
    host, host_country = table.host_of(provider, key)
    self_hosted = host == "self"
    inputs = table.inputs_of(provider) if not self_hosted else {}
    return ModelSpec(
        id=key,
        provider=provider,
        litellm_model=key,
        vendor=vendor,
        jurisdiction=country,
        host=host if not self_hosted else vendor,
        host_jurisdiction=host_country if not self_hosted else "self",
        hosting="self_hosted" if self_hosted else "api",
        open_weights=bool(_OPEN_WEIGHTS.search(key)),
        input_price=Decimal(str(entry["input_cost_per_token"])),
        output_price=Decimal(str(entry["output_cost_per_token"])),
        context_window=int(entry.get("max_input_tokens") or entry.get("max_tokens") or 4096),
        max_output_tokens=int(entry.get("max_output_tokens") or entry.get("max_tokens") or 4096),
        capabilities=frozenset(cap for flag, cap in _CAPABILITY_FLAGS.items() if entry.get(flag)),
        trains_on_inputs=inputs.get("trains_on_inputs"),
        zero_data_retention=inputs.get("zero_data_retention"),
    )


def _apply(base: ModelSpec | None, m: UserModel) -> ModelSpec:
    """Merge a user entry over an existing spec, or build a new one from it."""
    if base is None:
        return _new_spec(m)
    changes: dict[str, Any] = {
        name: value
        for name, value in {
            "provider": m.provider,
            "api_base": m.api_base,
            "api_key_env": m.api_key_env,
            "vendor": m.vendor,
            "jurisdiction": m.jurisdiction,
            "host": m.host,
            "host_jurisdiction": m.host_jurisdiction,
            "hosting": m.hosting,
            "open_weights": m.open_weights,
            "context_window": m.context_window,
            "max_output_tokens": m.max_output_tokens,
            "quality": m.quality,
            "trains_on_inputs": m.trains_on_inputs,
            "zero_data_retention": m.zero_data_retention,
        }.items()
        if value is not None
    }
    if m.model is not None:
        changes["litellm_model"] = _litellm_name(m.provider or base.provider, m.model)
    if m.price is not None:
        changes["input_price"] = m.price.input_per_mtok / MILLION
        changes["output_price"] = m.price.output_per_mtok / MILLION
    if m.capabilities is not None:
        changes["capabilities"] = frozenset(m.capabilities)
    moved = m.api_base is not None and m.api_base != base.api_base and (m.hosting or base.hosting) == "api"
    if moved and m.host_jurisdiction is None:  # another endpoint: the catalog's host no longer says where it runs
        host, changes["host_jurisdiction"] = _undeclared_host(m.api_base or "")
        changes["host"] = m.host or host
    if moved:  # nor what it does with inputs, unless declared
        changes.setdefault("trains_on_inputs", None)
        changes.setdefault("zero_data_retention", None)
    return replace(base, **changes)


def _new_spec(m: UserModel) -> ModelSpec:
    hosting = m.hosting or "api"
    if m.price is None and hosting != "self_hosted":
        raise CatalogError(
            f"model {m.id!r} has no price. Add 'price: {{input_per_mtok: …, output_per_mtok: …}}' "
            "or declare 'hosting: self_hosted' (price 0)."
        )
    if m.provider is None:
        raise CatalogError(f"model {m.id!r} needs 'provider' (the LiteLLM provider, e.g. openai).")
    price = m.price or Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))
    vendor, country = _vendor_table().maker_of(m.model or m.id, m.provider)
    vendor, country = m.vendor or vendor, m.jurisdiction or country
    if hosting == "self_hosted":
        default_host = (vendor, country)
    elif m.api_base is not None:  # a private endpoint: where it runs is whatever its owner declares, or unknown
        default_host = _undeclared_host(m.api_base)
    else:
        default_host = _vendor_table().host_of(m.provider)
    inputs = _vendor_table().inputs_of(m.provider) if hosting == "api" and m.api_base is None else {}
    return ModelSpec(
        id=m.id,
        provider=m.provider,
        litellm_model=_litellm_name(m.provider, m.model or m.id),
        vendor=vendor,
        jurisdiction=country,
        host=m.host or default_host[0],
        host_jurisdiction=m.host_jurisdiction or ("self" if hosting == "self_hosted" else default_host[1]),
        hosting=hosting,
        open_weights=m.open_weights if m.open_weights is not None else bool(_OPEN_WEIGHTS.search(m.id)),
        input_price=price.input_per_mtok / MILLION,
        output_price=price.output_per_mtok / MILLION,
        context_window=m.context_window or 8192,
        max_output_tokens=m.max_output_tokens or 4096,
        capabilities=frozenset(m.capabilities or ()),
        api_base=m.api_base,
        api_key_env=m.api_key_env,
        quality=m.quality,
        trains_on_inputs=m.trains_on_inputs if m.trains_on_inputs is not None else inputs.get("trains_on_inputs"),
        zero_data_retention=(
            m.zero_data_retention if m.zero_data_retention is not None else inputs.get("zero_data_retention")
        ),
    )


def _undeclared_host(api_base: str) -> tuple[str, str]:
    """An endpoint whose owner did not say where it runs: named by its address, in no known jurisdiction."""
    return urlsplit(api_base).hostname or api_base, UNKNOWN_JURISDICTION


def _litellm_name(provider: str, name: str) -> str:
    return name if name.startswith(f"{provider}/") else f"{provider}/{name}"
