"""Caps and budgets held across workers: governors on separate PostgreSQL sessions share one account."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

from polycascade import BudgetExceeded
from polycascade._ledger_postgres import PostgresLedger
from polycascade.governor import Governor
from polycascade.policies.config import Budgets, Policy, ShareCap
from polycascade.policies.routing import Need, RoutingSettings, max_call_cost
from polycascade.types import CallContext

from .conftest import recorded_as_the_gateway
from .test_governor import CLASSES, POOL
from .test_ledger_conformance import POSTGRES_URL

API_POOL = [m for m in POOL if m.hosting == "api"]  # the free self-hosted model would absorb the budget
NEED = Need(input_tokens=1000, max_tokens=1000)


async def test_two_workers_share_one_budget_and_one_share_cap() -> None:
    table = f"calls_{uuid.uuid4().hex[:12]}"
    ledgers = [PostgresLedger(POSTGRES_URL, table=table) for _ in range(2)]  # two sessions, as two workers
    policy = Policy(
        name="shared", data_classes=CLASSES, budgets=Budgets(per_run_usd=Decimal("0.01")),
        vendor_share=ShareCap(max_share=0.4, min_volume_usd=Decimal("0.001")),
    )  # fmt: skip
    workers = [Governor(policy, ledger) for ledger in ledgers]
    rng = random.Random(1)
    admitted: list[tuple[str, Decimal]] = []
    refused = 0

    async def call(worker: Governor) -> None:
        nonlocal refused
        ctx = CallContext(run_id="shared", data_class="public")
        try:
            _, reservation = await worker.route(API_POOL, NEED, ctx, {}, RoutingSettings(), rng)
        except BudgetExceeded:
            refused += 1
            return
        assert reservation is not None
        spec = reservation.spec
        await asyncio.sleep(rng.random() / 100)
        completion = await recorded_as_the_gateway(worker.ledger, reservation, ctx, reservation.amount, 1000)
        await worker.settle(reservation, completion.cost, vendor_ok=True)
        admitted.append((spec.vendor if spec.hosting == "api" else "", completion.cost))

    try:
        await asyncio.gather(*(call(workers[i % 2]) for i in range(120)))
        spend = await ledgers[0].spend_by("vendor", run_id="shared")
        total = sum((r.cost for r in spend.values()), Decimal(0))
        assert refused > 0 and total <= Decimal("0.01"), (refused, total)
        api = {v: r.cost for v, r in spend.items()}
        worst = max(max_call_cost(m, NEED) for m in API_POOL)
        api_total = sum(api.values(), Decimal(0))
        for vendor, cost in api.items():
            assert cost <= Decimal("0.4") * api_total + worst + Decimal("0.001"), (vendor, cost, api_total)
    finally:
        await ledgers[0].drop()
        for ledger in ledgers:
            await ledger.close()


def test_eight_processes_reserve_at_once_and_the_run_budget_holds_to_the_cent() -> None:
    """No lock between workers any more: each reservation is a guarded update of the budget's row."""
    import multiprocessing
    import time

    table, limit = f"calls_{uuid.uuid4().hex[:12]}", Decimal("0.01")
    start_at = time.time() + 6  # every process imported and connected: they begin together
    try:
        with multiprocessing.get_context("spawn").Pool(8) as pool:
            outcomes = pool.starmap(_worker, [(table, str(limit), start_at, seed) for seed in range(8)])
        spent = asyncio.run(_spent(table))
        admitted = sum((Decimal(a) for a, _ in outcomes), Decimal(0))
        refused = sum(r for _, r in outcomes)
        assert spent == admitted <= limit, (spent, admitted)
        assert refused > 0 and limit - spent < max(max_call_cost(m, NEED) for m in API_POOL)  # filled, not starved
        assert sum(1 for a, _ in outcomes if Decimal(a) > 0) >= 4  # the room went to many workers, not one
    finally:
        asyncio.run(_drop(table))


def _worker(table: str, limit: str, start_at: float, seed: int) -> tuple[str, int]:
    import time

    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(_reserve_many(table, Decimal(limit), seed))


async def _reserve_many(table: str, limit: Decimal, seed: int) -> tuple[str, int]:
    ledger = PostgresLedger(POSTGRES_URL, table=table)
    worker = Governor(Policy(name="shared", data_classes=CLASSES, budgets=Budgets(per_run_usd=limit)), ledger)
    rng, admitted, refused = random.Random(seed), Decimal(0), 0

    async def call() -> None:
        nonlocal admitted, refused
        ctx = CallContext(run_id="eight", data_class="public")
        try:
            _, reservation = await worker.route(API_POOL, NEED, ctx, {}, RoutingSettings(), rng)
        except BudgetExceeded:
            refused += 1
            return
        assert reservation is not None
        await asyncio.sleep(rng.random() / 50)
        cost = reservation.amount * Decimal("0.8")
        await recorded_as_the_gateway(ledger, reservation, ctx, cost, 800)
        await worker.settle(reservation, cost, vendor_ok=True)
        admitted += cost

    try:
        await asyncio.gather(*(call() for _ in range(25)))
    finally:
        await ledger.close()
    return str(admitted), refused


async def _spent(table: str) -> Decimal:
    ledger = PostgresLedger(POSTGRES_URL, table=table)
    try:
        return sum((r.cost for r in (await ledger.spend_by("vendor", run_id="eight")).values()), Decimal(0))
    finally:
        await ledger.close()


async def _drop(table: str) -> None:
    ledger = PostgresLedger(POSTGRES_URL, table=table)
    await ledger.drop()
    await ledger.close()
