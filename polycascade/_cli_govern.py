"""CLI commands about governance: `policy check`, `explain`, `report`."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from .catalog import Catalog
from .ledgers import open_ledger
from .sync import run_sync

out = Console()
policy_app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)

ledger_app = typer.Typer(help="Look after the ledger: retention.", no_args_is_help=True)
LedgerOpt = Annotated[str, typer.Option("--ledger", help="Ledger URL: sqlite:///FILE, a path, or memory://.")]
RATIOS = {"share", "cap", "used", "pass_rate", "escalation_rate"}
ModelsOpt = Annotated[Path | None, typer.Option("--models", help="Models file the policy refers to.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Policy YAML, or a preset name: balanced, cost-first, jp-enterprise.")],
    models_file: ModelsOpt = None,
) -> None:
    """Validate a policy against the catalog; errors name file, line and field."""
    from polycascade.policies.config import load_policy
    from polycascade.policies.routing import Need
    from polycascade.policies.rules import placement_rules

    loaded = load_policy(file, Catalog.load(models_file))
    policy = loaded.policy
    out.print(f"[green]ok[/green] {loaded.source}: policy {policy.name!r}, {len(loaded.pool)} models, "
              f"{len({m.vendor for m in loaded.pool})} vendors")  # fmt: skip
    for tier, vendors in loaded.vendors_by_tier().items():
        out.print(f"  tier {tier}: {len(vendors)} vendors ({', '.join(sorted(vendors))})")
    for name, rule in policy.data_classes.items():
        places = placement_rules(name, rule, policy.home_jurisdiction)
        allowed = [m.id for m in loaded.pool if all(place(m, Need()) is None for place in places)]
        out.print(f"  data class {name}: {len(allowed)} of {len(loaded.pool)} models allowed")
    for warning in loaded.warnings:
        out.print(f"  [yellow]warning:[/yellow] {warning}")


def explain(
    call_id: Annotated[str, typer.Argument(help="A call id from the ledger (see `report` or `ask --json`).")],
    ledger: LedgerOpt = "polycascade.db",
    as_json: JsonOpt = False,
) -> None:
    """Why this call went to this model: every candidate, every rejection, the price."""
    from .insight import explain_call

    info = _with_ledger(ledger, lambda lg: explain_call(lg, call_id))
    if as_json:
        out.print_json(json.dumps(info, ensure_ascii=False, default=str))
        return
    out.print(f"call {info['call_id']} · run {info['run_id']} · task {info['task_id']} · {info['node']}")
    out.print(f"→ {info['model']} ({info['vendor']}, {info['jurisdiction']}; hosted in {info['host_jurisdiction']}) "
              f"· {info['outcome']} · ${info['cost_usd']} · data class {info['data_class']}")  # fmt: skip
    decision = info["decision"] or {}
    if fx := decision.get("fx"):
        yen = Decimal(info["cost_usd"]) * Decimal(fx["jpy_per_usd"])
        out.print(f"in yen: ¥{yen:,.2f} at {fx['jpy_per_usd']} JPY/USD ({fx['as_of']}, the rate when reserved)")
    if sent := decision.get("cross_border"):
        bases = ", ".join(f"{country}: {basis}" for country, basis in sent["basis"].items())
        where = f"vendor {sent['vendor_jurisdiction']}, host {sent['host_jurisdiction']}"
        out.print(f"cross-border: from {sent['from']} to {where} · basis {bases} · "
                  f"policy {sent['policy']} {sent['policy_version']}")  # fmt: skip
    if "candidates" not in decision:
        reserved = f" (reserved ${decision['reserved_usd']})" if "reserved_usd" in decision else ""
        out.print(f"no routing decision recorded (a direct or evaluator call){reserved}")
        return
    policy, reserved = decision.get("policy", "?"), decision.get("reserved_usd", "?")
    out.print(f"why: {decision['reason']}  [policy {policy}, reserved ${reserved}]")
    _candidates_table(decision)
    if decision["rejected"]:
        table = Table(title="rejected")
        for column in ("model", "rule", "reason", "values"):
            table.add_column(column, overflow="fold")
        for model, denial in decision["rejected"].items():
            table.add_row(model, denial["rule"], denial["reason"], json.dumps(denial["values"], default=str))
        out.print(table)


def _candidates_table(decision: dict[str, Any]) -> None:
    table = Table(title=f"candidates (adequate: P(pass) ≥ {decision.get('threshold', '?')})")
    for column in ("", "model", "vendor", "P(pass)", "call $", "expected total $", "adequate"):
        table.add_column(column)
    for c in decision["candidates"]:
        mark = "→" if c["model"] == decision["chosen"] else ""
        table.add_row(mark, c["model"], c["vendor"], f"{c['p_pass']:.2f}", f"{float(c['call_cost_usd']):.8f}",
                      f"{float(c['expected_total_usd']):.8f}", "yes" if c.get("adequate") else "no")  # fmt: skip
    out.print(table)


def report(
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Compare against this policy's caps and budgets.")
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option("--hours", help="Window in whole hours (default: the policy's share window, or 24)."),
    ] = None,
    models_file: ModelsOpt = None,
    ledger: LedgerOpt = "polycascade.db",
    as_json: JsonOpt = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write one self-contained HTML page (charts, calls) to FILE.")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Labels of the HTML page: en or ja.")] = "en",
) -> None:
    """Spend, calls and shares by vendor and jurisdiction against the caps; escalations; budgets."""

    from ._page import render, shell
    from ._report_page import report_page
    from .views import Scope, build_report, recent_calls

    loaded = _policy(policy, models_file)
    scope = Scope.of(loaded, run_id=run, tenant=tenant, since_hours=hours)
    if html is not None:
        shell(lang)  # an unknown language fails before the ledger is read

    async def gather(lg: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        found = await build_report(lg, scope, loaded)
        return found, (await recent_calls(lg, scope, timezone=found["timezone"]) if html else [])

    data, calls = _with_ledger(ledger, gather)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render(report_page(data, calls, lang)), encoding="utf-8")
        Console(stderr=True).print(f"{data['calls']} calls · ${data['total_cost_usd']} → {html}", highlight=False)
    if as_json:
        out.print_json(json.dumps(data, ensure_ascii=False))
        return
    if html is not None:
        return
    out.print(f"{data['calls']} calls · ${data['total_cost_usd']} · scope {data['scope']} · policy {data['policy']}")
    if fx := data.get("fx"):
        out.print(f"in yen: ¥{Decimal(data['total_cost_jpy']):,.0f} at {fx['jpy_per_usd']} JPY/USD ({fx['as_of']})")
    for key in ("by_vendor", "by_jurisdiction", "by_host_jurisdiction"):
        _rows_table(key.replace("_", " "), data[key])
    esc = data["escalations"]
    out.print(f"escalations: {esc['escalations']} over {esc['tasks']} tasks ({esc['rate']:.2f} per task)")
    for key in ("budgets", "kinds", "denials", "top_tasks"):
        _rows_table(key.replace("_", " "), data[key])
    spread = data["vendor_spread"]
    out.print(
        f"vendors in use: {spread['count']} ({', '.join(spread['vendors_in_use'])}); minimum {spread['min_vendors']}"
    )


def dashboard(
    ledger: LedgerOpt = "polycascade.db",
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Show this policy's caps, budgets and time zone.")
    ] = None,
    models_file: ModelsOpt = None,
    tenants: Annotated[
        Path | None,
        typer.Option(help="YAML: tenants with key_env or key_sha256, as for serve (default: POLYCASCADE_GATEWAY_KEY)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8766,
    lang: Annotated[str, typer.Option("--lang", help="Labels: en or ja.")] = "en",
    refresh: Annotated[float, typer.Option("--refresh", min=1, help="Seconds between a page's refreshes.")] = 15,
) -> None:
    """The report, live in a browser at /dashboard: each tenant's key sees its own calls."""
    from aiohttp import web

    from ._page import shell
    from .dashboard import PREFIX, add_dashboard
    from .server import TenantKeys

    keys = TenantKeys.load(tenants)
    loaded = _policy(policy, models_file)
    shell(lang)
    _check_ledger(ledger)
    app = web.Application()

    async def ledger_ctx(app: web.Application) -> Any:
        lg = open_ledger(ledger)
        add_dashboard(app, lg, keys, loaded, lang, refresh)
        Console(stderr=True).print(f"dashboard on http://{host}:{port}{PREFIX}", highlight=False)
        yield
        await lg.close()

    app.cleanup_ctx.append(ledger_ctx)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


@ledger_app.command("prune")
def prune(
    ledger: LedgerOpt = "polycascade.db",
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Keep what its retention_days says (default 3 years).")
    ] = None,
    models_file: ModelsOpt = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Keep this many days instead.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")] = False,
) -> None:
    """Remove calls older than the retention period (records of transfers abroad included)."""
    import time
    from datetime import UTC, datetime

    from polycascade.policies.config import Policy

    loaded = _policy(policy, models_file)
    keep = days or (loaded.retention_days if loaded else Policy.model_fields["retention_days"].default)
    before = time.time() - keep * 86400

    async def go(lg: Any) -> int:
        if dry_run:
            return int((await lg.totals("SELECT COUNT(*) FROM {calls} WHERE ts < ?", before))[0][0])
        return int(await lg.prune(before))

    n = _with_ledger(ledger, go)
    cutoff = datetime.fromtimestamp(before, UTC).isoformat(timespec="seconds")
    verb = "would be removed" if dry_run else "removed"
    out.print(f"{n} calls before {cutoff} {verb} (retention {keep} days)", highlight=False)


def _rows_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.1%}" if k in RATIOS and v is not None else str(v) for k, v in row.items()))
    out.print(table)


def export(
    ledger: LedgerOpt = "polycascade.db",
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time on (ISO 8601, e.g. 2026-12-01 or …T09:00+09:00).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "csv",
    to: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output; parquet needs one).")
    ] = None,
    cross_border: Annotated[
        bool,
        typer.Option(
            "--cross-border", help="Only calls that sent personal data abroad: destinations, basis, policy version."
        ),
    ] = False,
) -> None:
    """Every call, one row each, for an auditor: where it went, what it cost, why (the decision and its rejections)."""
    import sys

    from .errors import ConfigError
    from .export import Format, export_calls

    if fmt not in ("csv", "jsonl", "parquet"):
        raise ConfigError(f"--format {fmt!r}: use csv, jsonl or parquet")
    if fmt == "parquet" and to is None:
        raise ConfigError("--format parquet writes a file: add --out FILE")
    bounds = {"since": _instant(since, "--since"), "until": _instant(until, "--until")}
    sink = to if to is not None else sys.stdout
    chosen = cast("Format", fmt)
    n = _with_ledger(
        ledger,
        lambda lg: export_calls(lg, sink, chosen, run_id=run, tenant=tenant, cross_border=cross_border, **bounds),
    )
    if to is not None:
        Console(stderr=True).print(f"{n} calls → {to}", highlight=False)


def _instant(text: str | None, flag: str) -> float | None:
    from datetime import UTC, datetime

    from .errors import ConfigError

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: not an ISO 8601 date or time (e.g. 2026-12-01T09:00+09:00)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _policy(path: Path | None, models_file: Path | None) -> Any:
    """The policy a governance command compares against, if one was given."""
    from polycascade.policies.config import load_policy

    return load_policy(path, Catalog.load(models_file)).policy if path else None


def _check_ledger(url: str) -> None:
    if "://" not in url and not Path(url).exists():
        from .errors import ConfigError

        raise ConfigError(f"no ledger at {url}; pass --ledger with the file your runs wrote.")


def _with_ledger(url: str, action: Any) -> Any:
    _check_ledger(url)

    async def go() -> Any:
        lg = open_ledger(url)
        try:
            return await action(lg)
        finally:
            await lg.close()

    return run_sync(go())
