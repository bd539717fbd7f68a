"""Caps and budgets held across workers: governors on separate PostgreSQL sessions share one account."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

from polycascade import BudgetExceeded
from polycascade._ledger_postgres import PostgresLedger
from polycascade.completer import call_record
from polycascade.governor import Governor
from polycascade.policies.config import Budgets, Policy, ShareCap
from polycascade.policies.routing import Need, RoutingSettings, max_call_cost
from polycascade.types import CallContext, Completion, CompletionRequest, Usage

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
        completion = Completion("c" + uuid.uuid4().hex[:8], spec.id, spec.vendor, "ok", (), Usage(1000, 1000),
                                reservation.amount, 0.01, 1)  # fmt: skip
        request = CompletionRequest.of(spec.id, "x", context=ctx)
        await worker.ledger.write(call_record(spec, request, completion.call_id, 0.01, 1, "ok", completion))
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
