"""Decisions with reservation per second against one PostgreSQL, from 1, 2, 4 and 8 processes.

    python bench/bench_reservations.py      # rewrites the "reservations" section of bench/RESULTS.md

Each process runs 8 governed decisions at a time for a few seconds: route (snapshot, rules, choice),
reserve (guarded budget-row updates and the ledger row in flight), the call's own ledger row, settle.
No model is called: this is the ceiling the accounts put on a cluster. Three policies, measured in
the same run: budgets only, shared by every process (one run budget: one row all update); budgets
per process (each its own tenant's row); and a vendor share cap, whose decisions take turns on one
advisory lock, as every decision did before budgets became rows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import publish

from polycascade._ledger_postgres import PostgresLedger
from polycascade.completer import call_record
from polycascade.governor import Governor
from polycascade.policies.config import Budgets, DataClassRule, Policy, ShareCap
from polycascade.policies.routing import Need, RoutingSettings
from polycascade.testing import ScriptedServer
from polycascade.types import CallContext, Completion, CompletionRequest, Usage

URL = os.environ.get("POLYCASCADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS, IN_FLIGHT = 4.0, 8
POLICIES = {
    "one run budget, shared": {"budgets": Budgets(per_run_usd=Decimal(10**6))},
    "a budget per process (tenant)": {"budgets": Budgets(default_tenant_day_usd=Decimal(10**6))},
    "a vendor share cap (one lock)": {
        "budgets": Budgets(per_run_usd=Decimal(10**6)),
        "vendor_share": ShareCap(max_share=0.9, min_volume_usd=Decimal(10**6)),
    },
}


def _pool() -> list:  # type: ignore[type-arg]
    server = ScriptedServer(lambda req: "ok")  # never started: entries only
    return [
        server.model("a/m", vendor="A", jurisdiction="FR", input_per_mtok="0.2"),
        server.model("b/m", vendor="B", jurisdiction="FR", input_per_mtok="0.3"),
    ]


async def decide(table: str, policy_name: str, worker: int, start_at: float) -> int:
    from polycascade.catalog import Catalog

    pool = [Catalog.bundled().with_models(_pool())[m] for m in ("a/m", "b/m")]
    ledger = PostgresLedger(URL, table=table)
    policy = Policy(name="bench", data_classes={"internal": DataClassRule()}, **POLICIES[policy_name])  # type: ignore[arg-type]
    governor, need = Governor(policy, ledger), Need(input_tokens=500, max_tokens=200)
    context = CallContext(run_id="bench", tenant=f"t{worker}", data_class="internal")
    await asyncio.sleep(max(0.0, start_at - time.time()))
    done, stop_at = 0, time.time() + SECONDS

    async def loop() -> None:
        nonlocal done
        while time.time() < stop_at:
            _, reservation = await governor.route(pool, need, context, {}, RoutingSettings())
            assert reservation is not None
            spec, cost = reservation.spec, reservation.amount / 2
            completion = Completion(reservation.id, spec.id, spec.vendor, "ok", (), Usage(500, 100), cost, 0.1, 1)
            request = CompletionRequest.of(spec.id, "x", context=context, call_id=reservation.id)
            await ledger.write(call_record(spec, request, reservation.id, 0.1, 1, "ok", completion))
            await governor.settle(reservation, cost, vendor_ok=True)
            done += 1

    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    await ledger.close()
    return done


def _process(table: str, policy_name: str, worker: int, start_at: float) -> int:
    return asyncio.run(decide(table, policy_name, worker, start_at))


def measure() -> list[str]:
    rows = ["| policy | 1 process | 2 | 4 | 8 | 8 ÷ 1 |", "|---|---|---|---|---|---|"]
    spawn = multiprocessing.get_context("spawn")
    for name in POLICIES:
        rates = []
        for n in (1, 2, 4, 8):
            table = f"bench_{uuid.uuid4().hex[:10]}"
            start_at = time.time() + 5
            with spawn.Pool(n) as workers:
                done = sum(workers.starmap(_process, [(table, name, w, start_at) for w in range(n)]))
            rates.append(done / SECONDS)
            asyncio.run(_drop(table))
        cells = " | ".join(f"{r:,.0f}" for r in rates)
        rows.append(f"| {name} | {cells} | {rates[-1] / rates[0]:.1f}× |")
    return [
        f"Decisions with reservation per second (route, reserve, the call's ledger row, settle), {IN_FLIGHT} at a time "
        f"per process for {SECONDS:.0f} s, against the PostgreSQL on this machine (2 cores, shared with the workers).",
        "",
        *rows,
        "",
        "Here the workers and PostgreSQL share 2 cores: from 2 processes on, the CPU is the limit, not a lock (the "
        "budget-per-process row climbs while a core is free; the share cap's one lock and the one shared row do "
        "not). Each decision costs 7 statements: a SELECT per budget scope, a transaction of a guarded UPDATE per "
        "scope and the INSERT of the row in flight, the call's own row (an upsert) and the settling UPDATE.",
        "",
        "**Estimate for 100 workers on several machines** (each at concurrency 64 against vendors answering in "
        "about 1 s: some 60 decisions/s a worker, 6,000/s in all): about 42,000 statements/s and 12,000 ledger-row "
        "writes/s, which one PostgreSQL on its own 8–16 cores and an SSD sustains (simple indexed statements run "
        "at tens of thousands per second per core). What saturates first is a budget row every worker updates: "
        "one run or day budget takes two updates per call (reserve, settle), each holding the row until its "
        "commit (0.1–0.3 ms with `synchronous_commit` on), so one row tops out near 3,000–10,000 updates/s — "
        "1,500–5,000 calls/s. Per-tenant and per-task budgets spread over many rows and do not meet that limit; "
        "a policy with a vendor share cap serialises every decision on one lock (the last row), about "
        "300–400/s here. The network adds a round trip per statement (0.2–0.5 ms in one data centre): latency "
        "per decision, not a ceiling, since each worker keeps many decisions in flight.",
    ]


async def _drop(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.drop()
    await ledger.close()


def main() -> int:
    return publish("reservations", "Reservations across workers", {"Against one PostgreSQL": measure})


if __name__ == "__main__":
    raise SystemExit(main())
