"""Policy rules: pure functions of (model, need, snapshot) that allow or deny, with reasons.

The snapshot holds *committed* money: spend already settled in the window plus the maximum cost
of every call in flight (its reservation). Checking committed money rather than settled money is
what keeps many concurrent calls from jointly overshooting a cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from decimal import Decimal

from polycascade.catalog import UNKNOWN_JURISDICTION, ModelSpec
from polycascade.jurisdictions import EU_MEMBERS
from polycascade.records import frozen

from .config import ANY, DataClassRule, ShareCap
from .routing import Denial, Need, Rule, max_call_cost

__all__ = [
    "BudgetState",
    "Snapshot",
    "breaker_rule",
    "budget_rule",
    "cross_border_rule",
    "memoised",
    "placement_rules",
    "residency_rule",
    "share_cap_rule",
    "training_rule",
    "transfer",
]

EU = EU_MEMBERS
UNKNOWN = UNKNOWN_JURISDICTION


@frozen
class BudgetState:
    name: str
    limit: Decimal
    committed: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.committed


@frozen
class Snapshot:
    """Committed spend and calls per vendor over the share window (API-hosted calls only)."""

    vendor_spend: Mapping[str, Decimal] = field(default_factory=dict)
    vendor_calls: Mapping[str, int] = field(default_factory=dict)
    budgets: tuple[BudgetState, ...] = ()
    open_vendors: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def total_spend(self) -> Decimal:
        return sum(self.vendor_spend.values(), Decimal(0))

    @property
    def total_calls(self) -> int:
        return sum(self.vendor_calls.values())


def _allows(allowed: list[str] | str, code: str) -> bool:
    if code == UNKNOWN:
        return False  # fail closed: an unknown jurisdiction never passes, not even `*`
    if allowed == ANY:
        return True
    return code in allowed or ("EU" in allowed and code in EU)


def residency_rule(data_class: str, rule: DataClassRule | None) -> Rule:
    """Data of `data_class` may go only where the policy allows; a class it does not define goes nowhere."""

    def residency(spec: ModelSpec, need: Need) -> Denial | None:
        values = {"data_class": data_class, "vendor_jurisdiction": spec.jurisdiction, "host": spec.host_jurisdiction}
        if rule is None:
            return Denial("residency", f"data class {data_class!r} is not defined in the policy (fail closed)", values)
        if spec.hosting == "self_hosted":
            return (
                None
                if rule.self_hosted
                else Denial("residency", f"{data_class} data may not go to self-hosted models", values)
            )
        if not rule.api:
            return Denial("residency", f"{data_class} data may go only to self-hosted models", values)
        checks = (
            (rule.vendor_jurisdictions, spec.jurisdiction, f"go to a {spec.jurisdiction}-based vendor"),
            (rule.host_jurisdictions, spec.host_jurisdiction, f"be processed in {spec.host_jurisdiction}"),
        )
        for allowed, code, what in checks:
            if not _allows(allowed, code):
                return Denial("residency", f"{data_class} data may not {what}", {**values, "allowed": allowed})
        return None

    return residency


def transfer(spec: ModelSpec, rule: DataClassRule | None, home: str) -> dict[str, object] | None:
    """Where a call to `spec` would send data of a class tracked under APPI Art. 28, and on what basis:
    `None` if nothing leaves `home` (self-hosted, or vendor and host both at home) or the class is not
    tracked. Both the vendor (the recipient) and its host (where the data is processed) count; a
    destination without a declared basis maps to `None`."""
    if rule is None or rule.cross_border_basis is None or spec.hosting == "self_hosted":
        return None
    abroad = sorted({spec.jurisdiction, spec.host_jurisdiction} - {home})
    if not abroad:
        return None
    bases = rule.cross_border_basis
    return {
        "from": home,
        "vendor_jurisdiction": spec.jurisdiction,
        "host_jurisdiction": spec.host_jurisdiction,
        "basis": {code: _basis(bases, code) for code in abroad},
    }


def _basis(bases: Mapping[str, str], code: str) -> str | None:
    if code == UNKNOWN:
        return None  # an unknown country never has a basis, not even `*`
    for key in (code, "EU" if code in EU else None, ANY):
        if key is not None and key in bases:
            return bases[key]
    return None


def cross_border_rule(data_class: str, rule: DataClassRule | None, home: str) -> Rule:
    """A class tracked under APPI Art. 28 goes abroad only where a basis is declared (fail closed)."""

    def cross_border(spec: ModelSpec, need: Need) -> Denial | None:
        sent = transfer(spec, rule, home)
        if sent is None:
            return None
        bases: Mapping[str, str | None] = sent["basis"]  # type: ignore[assignment]
        for country, basis in bases.items():
            values = {"data_class": data_class, "destination": country, "basis": basis, "from": home}
            if basis is None:
                return Denial(
                    "cross_border",
                    f"{data_class} data may not leave {home} for {country}: no basis declared (APPI Art. 28); "
                    f"declare one under data_classes.{data_class}.cross_border_basis, or keep it in {home}",
                    values,
                )
            if basis == "none":
                return Denial("cross_border", f"{data_class} data may not be sent to {country} (basis: none)", values)
        return None

    return cross_border


def training_rule(data_class: str, rule: DataClassRule | None) -> Rule:
    """A class that requires it goes only to hosts known not to train on API inputs (PPC, 2023)."""

    def training(spec: ModelSpec, need: Need) -> Denial | None:
        if rule is None or not rule.no_training_on_inputs or spec.hosting == "self_hosted":
            return None
        if spec.trains_on_inputs is False:
            return None
        values = {"data_class": data_class, "host": spec.host, "trains_on_inputs": spec.trains_on_inputs}
        if spec.trains_on_inputs:
            return Denial("training", f"{spec.host} trains on API inputs; {data_class} data may not go there", values)
        return Denial(
            "training",
            f"whether {spec.host} trains on API inputs is unknown (fail closed); if your contract rules it out, "
            f"declare trains_on_inputs: false for {spec.id} in a models file",
            values,
        )

    return training


def placement_rules(data_class: str, rule: DataClassRule | None, home: str) -> list[Rule]:
    """Where data of a class may go, whatever else is at stake: residency, then what the class
    requires of the host (no training on inputs), then transfers abroad."""
    rules = [residency_rule(data_class, rule)]
    if rule is not None and rule.no_training_on_inputs:
        rules.append(training_rule(data_class, rule))
    if rule is not None and rule.cross_border_basis is not None:
        rules.append(cross_border_rule(data_class, rule, home))
    return rules


def memoised(rule: Rule) -> Rule:
    """A rule that reads only the model's identity and hosting (residency), asked once per model."""
    seen: dict[int, tuple[ModelSpec, Denial | None]] = {}  # by id(): hashing a spec hashes every field

    def once_per_model(spec: ModelSpec, need: Need) -> Denial | None:
        hit = seen.get(id(spec))
        if hit is None or hit[0] is not spec:  # the spec is kept alive in `seen`, so its id is not reused
            hit = seen[id(spec)] = (spec, rule(spec, need))
        return hit[1]

    return once_per_model


def share_cap_rule(cap: ShareCap, snapshot: Snapshot) -> Rule:
    """No API vendor above `max_share` of committed spend (or calls), once volume passes the threshold."""

    def vendor_share(spec: ModelSpec, need: Need) -> Denial | None:
        if spec.hosting == "self_hosted":
            return None  # running our own weights is no dependence on a vendor
        # Shares bind once the window already holds the minimum volume (and any at all): the share
        # of an empty window is meaningless, and the one call that crosses the threshold is the tolerance.
        if cap.measure == "spend":
            cost, before = max_call_cost(spec, need), snapshot.total_spend
            if before == 0 or before < cap.min_volume_usd:
                return None
            share = float((snapshot.vendor_spend.get(spec.vendor, Decimal(0)) + cost) / (before + cost))
        else:
            before_calls = snapshot.total_calls
            if before_calls == 0 or before_calls < cap.min_calls:
                return None
            share = (snapshot.vendor_calls.get(spec.vendor, 0) + 1) / (before_calls + 1)
        if share <= cap.max_share:
            return None
        return Denial(
            "vendor_share",
            f"{spec.vendor} would reach {share:.0%} of {cap.measure} over {cap.window_hours:g} h "
            f"(cap {cap.max_share:.0%})",
            {"vendor": spec.vendor, "share": round(share, 4), "cap": cap.max_share, "measure": cap.measure},
        )

    return vendor_share


def budget_rule(budgets: tuple[BudgetState, ...]) -> Rule:
    """A model whose worst-case cost does not fit every budget is not a candidate; a cheaper one may be."""

    def budget(spec: ModelSpec, need: Need) -> Denial | None:
        cost = max_call_cost(spec, need)
        for b in budgets:
            if cost > b.remaining:
                return Denial(
                    "budget",
                    f"may cost ${cost}, more than the ${b.remaining} left of budget {b.name!r}",
                    {"budget": b.name, "limit": str(b.limit), "remaining": str(b.remaining), "needed": str(cost)},
                )
        return None

    return budget


def breaker_rule(open_vendors: Mapping[str, Mapping[str, object]]) -> Rule:
    def circuit_breaker(spec: ModelSpec, need: Need) -> Denial | None:
        state = open_vendors.get(spec.vendor)
        if state is None:
            return None
        return Denial(
            "circuit_breaker", f"{spec.vendor} is failing; circuit {state['state']}", {"vendor": spec.vendor, **state}
        )

    return circuit_breaker
