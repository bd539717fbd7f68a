"""Policy files: YAML validated by pydantic, checked against the catalog when loaded.

Errors name the file, the line and the field. Presets live in `policies/presets/`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_DOWN, Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polycascade.catalog import Catalog, ModelSpec
from polycascade.errors import CatalogError, ConfigError, PolicyError
from polycascade.jurisdictions import EU_MEMBERS, jurisdiction_code
from polycascade.records import replace as replace_record
from polycascade.tasks import Preferences, Task
from polycascade.yamlfile import Located, load_located

__all__ = [
    "Budgets",
    "CircuitBreakerConfig",
    "DataClassRule",
    "ExchangeRate",
    "LoadedPolicy",
    "Policy",
    "Route",
    "RoutingConfig",
    "ShareCap",
    "Spread",
    "load_policy",
    "pool_of",
    "preset_path",
]

PRESETS = Path(__file__).parent / "presets"
Jurisdiction = str
ANY: Literal["*"] = "*"
# APPI Art. 28's grounds for providing personal data to a third party in a foreign country: the
# person's consent (told the country and its regime), a recipient with an equivalent system
# (contract, CBPR), a country the PPC recognises as adequate (the EU and the UK); none: forbidden.
Basis = Literal["consent", "equivalent_system", "adequacy_eu_uk", "none"]
ADEQUATE = frozenset({"EU", "GB", *EU_MEMBERS})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataClassRule(_Strict):
    """Where data of one class may go. `*` allows every *known* jurisdiction; unknown ones never pass."""

    vendor_jurisdictions: list[Jurisdiction] | Literal["*"] = ANY
    host_jurisdictions: list[Jurisdiction] | Literal["*"] = ANY
    self_hosted: bool = True
    api: bool = True
    redact: list[Literal["email", "phone", "my_number", "address"]] = Field(
        default_factory=list, description="masked before any model that is not self-hosted"
    )
    no_training_on_inputs: bool = Field(
        False, description="only hosts whose terms rule out training on API inputs (unknown is denied)"
    )
    cross_border_basis: dict[str, Basis] | None = Field(
        None,
        description="personal data under APPI Art. 28: the lawful basis for sending it to each country outside "
        "the policy's home (a code, EU for its members, * for any other); none forbids. Every such call records "
        "its destinations and basis; a destination with no basis is denied. Unset: not tracked",
    )

    @field_validator("vendor_jurisdictions", "host_jurisdictions")
    @classmethod
    def _codes(cls, value: list[str] | str) -> list[str] | str:
        return [jurisdiction_code(v) for v in value] if isinstance(value, list) else value

    @field_validator("cross_border_basis")
    @classmethod
    def _destinations(cls, value: dict[str, Basis] | None) -> dict[str, Basis] | None:
        if value is None:
            return None
        bases = {(key if key == ANY else jurisdiction_code(key)): basis for key, basis in value.items()}
        for key, basis in bases.items():
            if basis == "adequacy_eu_uk" and key not in ADEQUATE:
                raise ValueError(f"{key}: adequacy_eu_uk is a basis only for the EU (and its members) and GB")
        return bases


class ShareCap(_Strict):
    """No vendor above `max_share` of spend (or calls) over a rolling window."""

    max_share: float = Field(gt=0, le=1)
    measure: Literal["spend", "calls"] = "spend"
    window_hours: float = Field(24, gt=0)
    min_volume_usd: Decimal = Field(Decimal(0), ge=0)
    min_calls: int = Field(0, ge=0)


class Spread(_Strict):
    """At least `min_vendors` distinct vendors in each tier (the whole pool if no tiers)."""

    min_vendors: int = Field(1, ge=1)
    tiers: dict[str, list[str]] = Field(default_factory=dict)


class Budgets(_Strict):
    """Limits in USD (`*_usd`) or in yen (`*_jpy`, converted at the policy's exchange rate of the day
    a call is reserved). Days are calendar days in the policy's timezone."""

    per_run_usd: Decimal | None = Field(None, ge=0)
    per_day_usd: Decimal | None = Field(None, ge=0)
    per_task_usd: Decimal | None = Field(None, ge=0)
    per_tenant_day_usd: dict[str, Decimal] = Field(default_factory=dict)
    default_tenant_day_usd: Decimal | None = Field(None, ge=0)
    per_run_jpy: Decimal | None = Field(None, ge=0)
    per_day_jpy: Decimal | None = Field(None, ge=0)
    per_task_jpy: Decimal | None = Field(None, ge=0)
    per_tenant_day_jpy: dict[str, Decimal] = Field(default_factory=dict)
    default_tenant_day_jpy: Decimal | None = Field(None, ge=0)

    @field_validator("per_tenant_day_usd", "per_tenant_day_jpy")
    @classmethod
    def _non_negative(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if negative := [t for t, v in value.items() if v < 0]:
            raise ValueError(f"budgets cannot be negative (tenants {negative})")
        return value

    @model_validator(mode="after")
    def _one_currency_per_scope(self) -> Budgets:
        for scope in _SCOPES:
            if getattr(self, f"{scope}_usd") is not None and getattr(self, f"{scope}_jpy") is not None:
                raise ValueError(f"give {scope}_usd or {scope}_jpy, not both")
        if both := set(self.per_tenant_day_usd) & set(self.per_tenant_day_jpy):
            raise ValueError(f"tenants {sorted(both)} have a day budget in USD and in JPY: give one")
        return self

    @property
    def in_yen(self) -> bool:
        return any(getattr(self, f"{s}_jpy") is not None for s in _SCOPES) or bool(self.per_tenant_day_jpy)

    def in_usd(self, jpy_per_usd: Decimal) -> Budgets:
        """Every limit in USD, yen converted at `jpy_per_usd` (rounded down: a yen limit is never exceeded)."""

        def usd(yen: Decimal) -> Decimal:
            return (yen / jpy_per_usd).quantize(Decimal("1e-12"), ROUND_DOWN)

        update: dict[str, object] = {f"{s}_usd": usd(getattr(self, f"{s}_jpy")) for s in _SCOPES
                                     if getattr(self, f"{s}_jpy") is not None}  # fmt: skip
        update["per_tenant_day_usd"] = {**self.per_tenant_day_usd,
                                        **{t: usd(v) for t, v in self.per_tenant_day_jpy.items()}}  # fmt: skip
        return self.model_copy(update=update)


_SCOPES = ("per_run", "per_day", "per_task", "default_tenant_day")


class ExchangeRate(_Strict):
    """Yen per US dollar as of a date: from the policy or its rates file, never fetched."""

    jpy_per_usd: Decimal = Field(gt=0)
    as_of: date

    def to_dict(self) -> dict[str, str]:
        return {"currency": "JPY", "jpy_per_usd": str(self.jpy_per_usd), "as_of": self.as_of.isoformat()}


class CircuitBreakerConfig(_Strict):
    failure_rate: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(5, ge=1)
    window_s: float = Field(60, gt=0)
    cooldown_s: float = Field(30, gt=0)


class RoutingConfig(_Strict):
    threshold: float = Field(0.5, ge=0, le=1)
    explore: bool = False
    max_rungs: int = Field(3, ge=1, le=10)
    max_failovers: int = Field(2, ge=0, le=10)
    prior_strength: float = Field(4.0, gt=0)
    seed: int | None = 0
    answer_value_usd: Decimal | None = Field(
        None, gt=0, description="what a correct answer is worth: under agreement checks, plans are chosen by worth"
    )
    target_cost_usd: Decimal | None = Field(
        None, gt=0, description="spend per task, on average: the answer value is paced to spend it"
    )


class Route(_Strict):
    """A named entry point (e.g. `cheap-adequate`): what callers ask for instead of a model id."""

    task_kind: str | None = None  # the policy's default when unset
    data_class: str | None = None  # the policy's default when unset
    models: list[str] = Field(default_factory=list, description="a subset of the pool; all of it when empty")
    max_tokens: int | None = Field(None, gt=0)
    prefer: dict[str, Any] | None = Field(None, description="routing preferences its callers get (they narrow)")

    @field_validator("prefer")
    @classmethod
    def _preferences(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            Preferences.parse(value, "prefer")  # a bad one fails where it is written
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class Policy(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    timezone: str = "UTC"
    home_jurisdiction: Jurisdiction = Field(
        "JP", description="where the data's owner is: sending a class with cross_border_basis elsewhere is a transfer"
    )
    retention_days: int = Field(3 * 365, ge=1, description="ledger rows kept this long (`polycascade ledger prune`)")
    currency: Literal["USD", "JPY"] = Field("USD", description="what reports, the dashboard and explain show")
    exchange_rates: list[ExchangeRate] = Field(
        default_factory=list, description="JPY per USD by date: a day uses the latest on or before it"
    )
    exchange_rates_file: str | None = Field(
        None, description="CSV `date,jpy_per_usd`, beside the policy file: more rates, read when it loads"
    )
    models: list[str] = Field(default_factory=list, description="the candidate pool")
    judges: list[str] = Field(default_factory=list)
    priors: dict[str, float] = Field(default_factory=dict, description="prior P(pass) per model, 0–1")
    routing: RoutingConfig = RoutingConfig()
    data_classes: dict[str, DataClassRule] = Field(default_factory=lambda: {"internal": DataClassRule()})
    default_data_class: str = "internal"
    default_task_kind: str = Field("general", min_length=1)
    vendor_share: ShareCap | None = None
    vendor_spread: Spread | None = None
    budgets: Budgets = Budgets()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    routes: dict[str, Route] = Field(default_factory=dict)

    @field_validator("priors")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if bad := {m: q for m, q in value.items() if not 0 < q < 1}:
            raise ValueError(f"priors are probabilities strictly between 0 and 1; got {bad}")
        return value

    @field_validator("home_jurisdiction")
    @classmethod
    def _home(cls, value: str) -> str:
        return jurisdiction_code(value)

    def rate_on(self, day: date) -> ExchangeRate:
        """The rate a day uses: the latest on or before it; none is an error (a rate is never guessed)."""
        known = [r for r in self.exchange_rates if r.as_of <= day]
        if not known:
            dates = ", ".join(r.as_of.isoformat() for r in self.exchange_rates) or "none given"
            raise PolicyError(
                f"policy {self.name!r}: no JPY rate on or before {day.isoformat()} (rates: {dates}); add one to "
                "exchange_rates or the exchange_rates_file",
                parameter="exchange_rates",
            )
        return max(known, key=lambda r: r.as_of)

    @property
    def in_yen(self) -> bool:
        """Whether yen matters: shown in yen, or budgeted in yen."""
        return self.currency == "JPY" or self.budgets.in_yen

    @cached_property
    def version(self) -> str:
        """A digest of everything the policy says: which version a recorded decision was made under."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Asia/Tokyo") from None
        return value

    def resolve(self, task: Task) -> Task:
        """`task` with this policy's defaults for what it leaves unset: the one place defaults are applied.

        A data class this policy does not define is refused: no rule could say where it may go.
        """
        data_class = task.data_class or self.default_data_class
        if data_class not in self.data_classes:
            raise PolicyError(
                f"`data_class` {data_class!r} is not defined by policy {self.name!r} "
                f"(it defines {', '.join(sorted(self.data_classes))}): use one of those, or add it to the policy",
                parameter="data_class",
            )
        if task.data_class == data_class and task.kind is not None:
            return task
        return replace_record(task, data_class=data_class, kind=task.kind or self.default_task_kind)

    @model_validator(mode="after")
    def _yen_has_a_rate(self) -> Policy:
        if self.in_yen and not self.exchange_rates and self.exchange_rates_file is None:
            raise ValueError(
                "yen (currency: JPY or a *_jpy budget) needs a rate: exchange_rates: [{jpy_per_usd: …, as_of: "
                "YYYY-MM-DD}] or exchange_rates_file (rates are never fetched)"
            )
        return self

    @model_validator(mode="after")
    def _classes_exist(self) -> Policy:
        if self.default_data_class not in self.data_classes:
            raise ValueError(f"default_data_class {self.default_data_class!r} is not among data_classes")
        for name, route in self.routes.items():
            if route.data_class is not None and route.data_class not in self.data_classes:
                raise ValueError(f"route {name!r}: data class {route.data_class!r} is not among data_classes")
        return self


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy checked against a catalog: its pool and judges resolved to specs."""

    policy: Policy
    source: str
    pool: tuple[ModelSpec, ...]
    judges: tuple[ModelSpec, ...]
    warnings: tuple[str, ...] = ()

    def vendors_by_tier(self) -> Mapping[str, set[str]]:
        spread = self.policy.vendor_spread
        tiers = spread.tiers if spread and spread.tiers else {"all": [m.id for m in self.pool]}
        by_id = {m.id: m for m in (*self.pool, *self.judges)}
        return {tier: {by_id[m].vendor for m in models if m in by_id} for tier, models in tiers.items()}


def pool_of(
    policy: Policy, catalog: Catalog, where: Callable[[str, int], str] | None = None
) -> tuple[tuple[ModelSpec, ...], tuple[ModelSpec, ...]]:
    """The policy's models and judges as catalog entries, each with the policy's prior if it sets one.
    `where(field, index)` places an unknown model in its file (default: names the policy)."""

    def specs(field: Literal["models", "judges"]) -> tuple[ModelSpec, ...]:
        out = []
        for i, model_id in enumerate(getattr(policy, field)):
            try:
                spec = catalog[model_id]
            except CatalogError as exc:
                place = where(field, i) if where else f"policy {policy.name!r}"
                raise PolicyError(f"{place}: field '{field}.{i}': {exc}") from None
            prior = policy.priors.get(model_id)
            out.append(spec if prior is None else replace(spec, quality=prior))
        return tuple(out)

    return specs("models"), specs("judges")


def preset_path(name: str) -> Path:
    path = PRESETS / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise PolicyError(f"no preset {name!r}; presets: {', '.join(known)}")
    return path


def load_policy(path: str | Path, catalog: Catalog | None = None, *, resolve_models: bool = True) -> LoadedPolicy:
    """Validate the file, then check every model it names and its vendor spread against `catalog`.

    `resolve_models=False` checks the rules only: a backtest's pool is the models in its traces.
    """
    path = _policy_path(path)
    doc = load_located(path, Policy, PolicyError, prepare=lambda data: _extended(data, Path(path).parent))
    if doc.value.exchange_rates_file is not None:
        rates_file = doc.path.parent / doc.value.exchange_rates_file
        rates = [*doc.value.exchange_rates, *read_rates(rates_file)]
        doc = replace(doc, value=doc.value.model_copy(update={"exchange_rates": rates}))
    if not resolve_models:
        return LoadedPolicy(doc.value, str(doc.path), (), ())
    catalog = catalog or Catalog.load()
    pool, judges = pool_of(doc.value, catalog, where=doc.where)
    for model_id in doc.value.priors:
        if model_id not in {m.id for m in (*pool, *judges)}:
            raise PolicyError(f"{doc.where('priors', model_id)}: field 'priors.{model_id}': not in models or judges")
    loaded = LoadedPolicy(doc.value, str(doc.path), pool, judges)
    _check_routes(doc, loaded)
    _check_spread(doc, loaded)
    _check_share_cap_is_satisfiable(doc, loaded)
    return replace(loaded, warnings=tuple(_class_warnings(loaded)))


def _policy_path(path: str | Path, relative_to: Path | None = None) -> Path:
    """A policy file, or a preset's by name."""
    given = Path(path) if relative_to is None or Path(path).is_absolute() else relative_to / path
    if not given.exists() and "/" not in str(path) and not str(path).endswith((".yaml", ".yml")):
        return preset_path(str(path))
    return given


def _extended(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`extends: jp-enterprise` (a preset or a file beside this one): its fields, with this file's
    over them; mappings (data_classes, budgets, routing, …) merge key by key, anything else replaces."""
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data
    base_path = _policy_path(str(base_ref), folder)
    if not base_path.exists():
        raise PolicyError(f"extends: {base_ref!r}: no such preset or file")
    base = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
    if "extends" in base:
        raise PolicyError(f"extends: {base_ref!r} extends another policy itself; extend one that does not")
    return _merged(base, data)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def read_rates(path: Path) -> list[ExchangeRate]:
    """A CSV of `date,jpy_per_usd` rows; an error names the file, line and field."""
    import csv

    from pydantic import ValidationError

    if not path.exists():
        raise PolicyError(f"exchange_rates_file {path}: no such file")
    rates = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"date", "jpy_per_usd"} <= set(reader.fieldnames):
            raise PolicyError(f"{path}:1: the header must name the columns date and jpy_per_usd")
        for row in reader:
            try:
                rates.append(ExchangeRate(jpy_per_usd=row["jpy_per_usd"], as_of=row["date"]))  # type: ignore[arg-type]
            except ValidationError as exc:
                error = exc.errors()[0]
                field = {"as_of": "date"}.get(str(error["loc"][0]), str(error["loc"][0]))
                raise PolicyError(f"{path}:{reader.line_num}: field {field!r}: {error['msg']}") from None
    return rates


def _class_warnings(loaded: LoadedPolicy) -> list[str]:
    """Data classes the pool cannot serve well; legal, but worth knowing before production."""
    from .routing import Need
    from .rules import residency_rule  # rules import config: resolve at call time

    warnings = []
    cap = loaded.policy.vendor_share
    for name, rule in loaded.policy.data_classes.items():
        allowed = [m for m in loaded.pool if residency_rule(name, rule)(m, Need()) is None]
        api_vendors = {m.vendor for m in allowed if m.hosting == "api"}
        if not allowed:
            warnings.append(f"data class {name!r}: no model in the pool may take it; its tasks will fail closed")
        elif cap is not None and api_vendors and cap.max_share * len(api_vendors) < 1:
            warnings.append(
                f"data class {name!r} reaches {len(api_vendors)} API vendor(s) ({', '.join(sorted(api_vendors))}); "
                f"alone its traffic cannot stay under the {cap.max_share:.0%} cap and will lean on self-hosted models"
            )
    return warnings


def _check_routes(doc: Located[Policy], loaded: LoadedPolicy) -> None:
    pool = {m.id for m in loaded.pool}
    for name, route in doc.value.routes.items():
        for i, model_id in enumerate(route.models):
            if model_id not in pool:
                where = doc.where("routes", name, "models", i)
                raise PolicyError(f"{where}: field 'routes.{name}.models.{i}': {model_id!r} is not in models")


def _check_spread(doc: Located[Policy], loaded: LoadedPolicy) -> None:
    spread = doc.value.vendor_spread
    if spread is None:
        return
    for tier, models in spread.tiers.items():
        for i, model_id in enumerate(models):
            if model_id not in {m.id for m in (*loaded.pool, *loaded.judges)}:
                where = doc.where("vendor_spread", "tiers", tier, i)
                raise PolicyError(f"{where}: field 'vendor_spread.tiers.{tier}.{i}': {model_id!r} is not in models")
    for tier, vendors in loaded.vendors_by_tier().items():
        if len(vendors) < spread.min_vendors:
            where = doc.where("vendor_spread", "min_vendors")
            raise PolicyError(
                f"{where}: field 'vendor_spread.min_vendors': tier {tier!r} has {len(vendors)} vendor(s) "
                f"({', '.join(sorted(vendors)) or 'none'}), fewer than {spread.min_vendors}; failover needs more. "
                "Add models from other vendors."
            )


def _check_share_cap_is_satisfiable(doc: Located[Policy], loaded: LoadedPolicy) -> None:
    cap = doc.value.vendor_share
    vendors = {m.vendor for m in loaded.pool if m.hosting == "api"}
    if cap is not None and vendors and cap.max_share * len(vendors) < 1:
        where = doc.where("vendor_share", "max_share")
        raise PolicyError(
            f"{where}: field 'vendor_share.max_share': {len(vendors)} API vendors at most "
            f"{cap.max_share:.0%} each cannot carry all the spend. Add vendors or raise the cap."
        )
