"""The `polycascade` command. Heavy imports (litellm, langgraph) happen inside the commands."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import _cli_backtest, _cli_govern
from ._otel_setup import configure_from_environment
from .catalog import Catalog, ModelSpec
from .errors import ConfigError, PolycascadeError

app = typer.Typer(
    help="Route each LLM subtask to the cheapest adequate model; verify, escalate and govern.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

app.add_typer(_cli_govern.policy_app, name="policy")
app.add_typer(_cli_govern.ledger_app, name="ledger")
app.command()(_cli_govern.explain)
app.command()(_cli_govern.report)
app.command()(_cli_govern.export)
app.command()(_cli_govern.dashboard)
app.command()(_cli_backtest.backtest)

ModelsOpt = Annotated[Path | None, typer.Option("--models", help="YAML file adding or overriding models.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _root(
    ctx: typer.Context,
    log_level: Annotated[
        str | None, typer.Option("--log-level", envvar="POLYCASCADE_LOG", help="DEBUG, INFO, … (to stderr)")
    ] = None,
) -> None:
    """Route each LLM subtask to the cheapest adequate model; verify, escalate and govern."""
    if log_level:
        from ._secrets import install_logging

        install_logging(log_level)
    if ctx.invoked_subcommand != "serve":  # serve adds a Prometheus reader of its own first
        configure_from_environment()  # traces and metrics over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set


@app.command()
def models(
    vendor: Annotated[str | None, typer.Option(help="Only this vendor (maker), e.g. deepseek.")] = None,
    jurisdiction: Annotated[str | None, typer.Option(help="Only this vendor jurisdiction, e.g. CN.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this LiteLLM provider, e.g. together_ai.")] = None,
    capability: Annotated[str | None, typer.Option(help="tools | json_schema | vision | reasoning")] = None,
    models_file: ModelsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List catalog models with prices (USD per 1M tokens) and jurisdictions."""
    specs = Catalog.load(models_file).select(
        vendor=vendor, jurisdiction=jurisdiction, provider=provider, capability=capability
    )
    if as_json:
        out.print_json(json.dumps([_spec_json(s) for s in specs]))
        return
    columns = ("model", "vendor", "juris.", "host", "$/M in", "$/M out", "context", "capabilities")
    rows = [_spec_row(s) for s in specs]
    if not out.is_terminal:  # piped: one tab-separated line per model, for grep and cut
        for row in (columns, *rows):
            print("\t".join(row))
        return
    table = Table(title=f"{len(specs)} models")
    for column in columns:
        table.add_column(column, no_wrap=column == "model", overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _spec_row(s: ModelSpec) -> tuple[str, ...]:
    price_in, price_out = s.price_per_mtok()
    host = "self-hosted" if s.hosting == "self_hosted" else f"{s.host} ({s.host_jurisdiction})"
    caps = ",".join(sorted(s.capabilities))
    return (s.id, s.vendor, s.jurisdiction, host, str(price_in), str(price_out), str(s.context_window), caps)


def _spec_json(s: ModelSpec) -> dict[str, Any]:
    price_in, price_out = s.price_per_mtok()
    return {
        "id": s.id,
        "provider": s.provider,
        "vendor": s.vendor,
        "jurisdiction": s.jurisdiction,
        "host": s.host,
        "host_jurisdiction": s.host_jurisdiction,
        "hosting": s.hosting,
        "open_weights": s.open_weights,
        "input_usd_per_mtok": str(price_in),
        "output_usd_per_mtok": str(price_out),
        "context_window": s.context_window,
        "capabilities": sorted(s.capabilities),
    }


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="The task.")],
    schema: Annotated[
        str | None, typer.Option(help="module:Model — the answer must validate as this pydantic model.")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="Policy file or preset name; its models form the pool.")] = None,
    models_file: ModelsOpt = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="A catalog model for the pool (repeatable).")
    ] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option("--judge", help="Judge model (repeatable); default: the pool's strongest of another vendor."),
    ] = None,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Add the free local SmolLM2 rung.")] = True,
    kind: Annotated[
        str | None, typer.Option(help="Task kind: routing learns adequacy per kind (default: the policy's).")
    ] = None,
    data_class: Annotated[
        str | None, typer.Option(help="public | internal | confidential | … (default: the policy's)")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    max_rungs: Annotated[int | None, typer.Option(min=1, help="default: the policy's (3)")] = None,
    ledger: Annotated[str, typer.Option(help="Ledger URL: sqlite:///FILE, a path, or memory://.")] = "polycascade.db",
    as_json: JsonOpt = False,
) -> None:
    """Answer one prompt with the cheapest adequate model; show every attempt and why."""
    from ._ask import AskOptions, run_ask

    options = AskOptions(
        prompt=prompt,
        schema=schema,
        policy=policy,
        models_file=models_file,
        models=model or [],
        judges=judge or [],
        local=local,
        kind=kind,
        data_class=data_class,
        max_tokens=max_tokens,
        max_rungs=max_rungs,
        ledger=ledger,
    )
    result = run_ask(options)
    if as_json:
        out.print_json(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        _print_result(result)
    if result.status == "failed":
        err.print(f"[red]failed:[/red] {result.stop_reason}", highlight=False)
        raise typer.Exit(1)


@app.command()
def run(
    workflow: Annotated[
        str, typer.Argument(help="summarise | extract (with --schema) | delegate | module:function for your graph")
    ],
    input_path: Annotated[Path, typer.Option("--input", help="A folder of documents, or one file.")],
    out: Annotated[Path, typer.Option("--out", help="Results, one JSON line per document.")] = Path(
        "out/results.jsonl"
    ),
    policy: Annotated[str | None, typer.Option("--policy", help="Policy file or preset.")] = None,
    models_file: ModelsOpt = None,
    budget: Annotated[float | None, typer.Option("--budget", help="USD for the whole run, resumes included.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=1024)] = 8,
    backend: Annotated[str, typer.Option("--backend", help="local | ray (needs --ledger postgresql://…)")] = "local",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Ray workers (--backend ray).")] = 2,
    ledger: Annotated[
        str, typer.Option("--ledger", help="Ledger URL: sqlite:///FILE, a path, memory://.")
    ] = "polycascade.db",
    schema: Annotated[str | None, typer.Option(help="module:Model for the extract workflow.")] = None,
    data_class: Annotated[str | None, typer.Option(help="Data class of the documents (default: the policy's).")] = None,
    chunk_tokens: Annotated[int, typer.Option(min=16, help="Largest chunk, in tokens.")] = 800,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Use the local SmolLM2 rung.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run a workflow over documents: resumable, budgeted, one result line per document."""
    from decimal import Decimal

    from polycascade.tools.documents import discover

    from ._ask import load_schema, open_cli_service, pool_ids
    from .batch import RunOptions, run_batch
    from .sync import run_sync

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend}: use local or ray")
    if budget is not None and budget <= 0:
        raise ConfigError(f"--budget must be positive, got {budget}")
    discover(input_path)  # the user's input first: a bad path fails fast, before any service starts
    options = RunOptions(
        workflow, input_path, out, concurrency, load_schema(schema) if schema else None, data_class,
        chunk_tokens=chunk_tokens, progress=progress,
    )  # fmt: skip
    service_kwargs: dict[str, Any] = {
        "policy": policy, "models_file": models_file, "models": pool_ids([], models_file), "local": local,
        "ledger": ledger, "run_budget_usd": Decimal(str(budget)) if budget is not None else None,
    }  # fmt: skip
    if backend == "ray":
        from ._ray import run_on_ray
        from .batch import tally_spend
        from .ledgers import open_ledger

        summary = run_on_ray(options, service_kwargs, workers)
        run_sync(tally_spend(summary, open_ledger(ledger)))
        governed = None
    else:
        with open_cli_service(**service_kwargs) as service:
            summary = run_sync(run_batch(options, service))
            governed = service.policy
    report_path = _write_run_report(summary, ledger, governed)
    shares = ", ".join(f"{v} ${c:.6f}" for v, c in sorted(summary.vendors.items(), key=lambda kv: -kv[1]))
    nodes = f" on {len(summary.nodes)} Ray node{'s' * (len(summary.nodes) != 1)}" if summary.nodes else ""
    err.print(
        f"{summary.done} done{nodes}, {summary.failed} failed, {summary.skipped} already done · ${summary.spent:.6f}"
        f"{' (' + shares + ')' if shares else ''}\nresults: {summary.out}\nreport:  {report_path}  "
        f"(again any time: polycascade report --run {summary.run_id} --ledger {ledger})",
        highlight=False,
        soft_wrap=True,  # paths must survive copy and paste
    )
    if summary.duplicates:
        some = "; ".join(f"{doc_id}: {', '.join(keys)}" for doc_id, keys in list(summary.duplicates.items())[:5])
        err.print(
            f"[yellow]warning:[/yellow] {len(summary.duplicates)} id(s) given to more than one record, each "
            f"record answered on its own line (`key` tells them apart): {some}",
            soft_wrap=True,
        )
    if summary.stopped:
        err.print(
            f"[yellow]stopped early:[/yellow] {summary.stopped.rstrip('.')}. Rerun the same command to continue.",
            soft_wrap=True,
        )
        raise typer.Exit(4)


def _write_run_report(summary: Any, ledger_url: str, policy: Any = None) -> Path:
    """The run's report (spend and shares by vendor and jurisdiction, escalations) beside its results."""
    from .ledgers import open_ledger
    from .sync import run_sync
    from .views import Scope, build_report

    async def build() -> dict[str, Any]:
        ledger = open_ledger(ledger_url)
        try:
            return await build_report(ledger, Scope(run_id=summary.run_id), policy)
        finally:
            await ledger.close()

    path = summary.out.with_suffix(".report.json")
    path.write_text(json.dumps(run_sync(build()), ensure_ascii=False, indent=2), encoding="utf-8")
    return Path(path)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    policy: Annotated[str | None, typer.Option(help="Policy file or preset: pool, routes, rules, budgets.")] = None,
    models_file: ModelsOpt = None,
    ledger: Annotated[str, typer.Option(help="Ledger URL: sqlite:///FILE, a path, or memory://.")] = "polycascade.db",
    tenants: Annotated[
        Path | None, typer.Option(help="YAML: tenants with key_env or key_sha256 (default: POLYCASCADE_GATEWAY_KEY).")
    ] = None,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Serve the local SmolLM2 rung too.")] = True,
    metrics_port: Annotated[
        int | None, typer.Option(help="Also serve Prometheus metrics at http://127.0.0.1:PORT/metrics (loopback).")
    ] = None,
) -> None:
    """An OpenAI-compatible endpoint (/v1/chat/completions, /v1/models): every call governed and recorded."""
    from aiohttp import web

    from ._ask import open_cli_service, pool_ids
    from .server import TenantKeys, build_app, serve_metrics

    keys = TenantKeys.load(tenants)
    if metrics_port is not None and importlib.util.find_spec("opentelemetry.exporter.prometheus") is None:
        raise ConfigError("--metrics-port needs the Prometheus exporter: pip install 'polycascade[otel]'")
    configure_from_environment(prometheus=metrics_port is not None)
    models = pool_ids([], models_file)
    with open_cli_service(policy=policy, models_file=models_file, models=models, local=local, ledger=ledger) as service:
        app = build_app(service, keys)

        async def announce(_: web.Application) -> None:
            err.print(f"polycascade serving on http://{host}:{port}/v1 · policy {service.policy.name} · "
                      f"{len(service.pool)} models · {len(keys.digests)} tenant(s)", highlight=False)  # fmt: skip

        app.on_startup.append(announce)
        if metrics_port is not None:
            app.cleanup_ctx.append(serve_metrics(metrics_port))
        web.run_app(app, host=host, port=port, print=None, access_log=None)


def _print_result(result: Any) -> None:
    colour = {"verified": "green", "unverified": "yellow", "failed": "red"}[result.status]
    out.print(result.answer if result.answer is not None else "(no answer)", markup=False, highlight=False)
    out.print(f"[{colour}]{result.status}[/{colour}] · ${result.total_cost} · {result.stop_reason}")
    table = Table(title="attempts")
    for column in ("#", "model", "vendor", "cost $", "verdict", "why this model"):
        table.add_column(column, overflow="fold")
    for a in result.attempts:
        verdict = a.error or (f"{'pass' if a.verdict.passed else 'fail'}: {a.verdict.reason}" if a.verdict else "")
        why = a.decision.get("reason", "") if a.decision else ""
        table.add_row(str(a.rung), a.model, a.vendor, str(a.cost), verdict, why)
    out.print(table)


FLAGS = {  # the library's parameters, as this command's flags name them
    "run_budget_usd": "--budget",
    "models": "--model/--models",
    "data_class": "--data-class",
    "policy": "--policy",
    "judges": "--judge",
    "ledger": "--ledger",
    "input_path": "--input",
    "schema": "--schema module:Model",
}


def _in_flags(exc: ConfigError) -> str:
    """A library error names a Python parameter (in backquotes); the user typed a flag."""
    flag = FLAGS.get(exc.parameter or "")
    return str(exc).replace(f"`{exc.parameter}`", flag) if flag else str(exc)


def main() -> None:
    """Entry point: user errors print one clear message and exit 2; provider errors exit 3."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {_in_flags(exc)}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except PolycascadeError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(3)
    finally:  # the process is exiting: spare it the final collections over every object (0.4 s)
        gc.freeze()
