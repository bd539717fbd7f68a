"""Money across crashes: a reservation is a ledger row before its call goes out, and an answer
already paid for is reused, not bought again.

The kill -9 test of `polycascade run` is in test_workflows.py; here each guarantee is pinned where
it is decided: the governor over a ledger on disk (SQLite, and PostgreSQL shared by workers), and
`run` resuming a document whose answers were recorded but never checkpointed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade import BudgetExceeded, ProviderUnavailable
from polycascade._ledger_postgres import PostgresLedger
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.governor import Governor, Reservation
from polycascade.ledger import IN_FLIGHT, Ledger
from polycascade.policies.config import Budgets, DataClassRule, Policy
from polycascade.policies.routing import Need, RoutingSettings, max_call_cost
from polycascade.types import CallContext, Completion, Usage

from .conftest import make_spec, recorded_as_the_gateway
from .test_workflows import Vendors, documents, lines, run

POSTGRES_URL = os.environ.get("POLYCASCADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CHEAP = make_spec("cheap", "1", vendor="DeepSeek", jurisdiction="CN")
NEED = Need(input_tokens=1000, max_tokens=1000)
RESERVED = max_call_cost(CHEAP, NEED)
CONTEXT = CallContext(run_id="r", task_id="t", data_class="public")


class Clock:
    now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def disk(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Ledger]]:
    """Opens the same ledger on disk again, as another process (a resumed run, another worker) would."""
    table, opened = f"calls_{uuid.uuid4().hex[:12]}", []

    def reopen() -> Ledger:
        sqlite = request.param == "sqlite"
        ledger = SQLiteLedger(tmp_path / "ledger.db") if sqlite else PostgresLedger(POSTGRES_URL, table=table)
        opened.append(ledger)
        return ledger

    yield reopen
    if isinstance(opened[0], PostgresLedger):
        await opened[0].drop()
    for ledger in opened:
        await ledger.close()


def governor(ledger: Ledger, budget: Decimal | None = None, clock: Clock | None = None) -> Governor:
    classes = {"public": DataClassRule()}
    policy = Policy(name="p", data_classes=classes, default_data_class="public", budgets=Budgets(per_run_usd=budget))
    return Governor(policy, ledger, clock=clock or Clock(), refresh_s=30)


async def reserve(g: Governor) -> Reservation:
    _, reservation = await g.route([CHEAP], NEED, CONTEXT, {}, RoutingSettings())
    assert reservation is not None and reservation.amount == RESERVED
    return reservation


async def committed(g: Governor) -> Decimal:
    snapshot = await g._snapshot(g._scopes(CONTEXT))
    return snapshot.budgets[0].committed


async def test_a_call_in_flight_is_on_disk_and_counted_by_whoever_opens_the_ledger_next(
    disk: Callable[[], Ledger],
) -> None:
    budget = RESERVED * 3 / 2  # room for one call, not two
    killed = governor(disk(), budget)
    reservation = await reserve(killed)  # … and the process dies before the call returns
    resumed = governor(disk(), budget)
    rows = await resumed.ledger.calls(run_id="r")
    assert [(r.call_id, r.outcome, r.cost) for r in rows] == [(reservation.id, IN_FLIGHT, RESERVED)]
    with pytest.raises(BudgetExceeded):  # the money it may have spent still counts
        await reserve(resumed)
    assert await committed(resumed) == RESERVED


async def test_the_calls_own_row_replaces_its_row_in_flight_and_nothing_is_counted_twice(
    disk: Callable[[], Ledger],
) -> None:
    clock = Clock()
    g = governor(disk(), Decimal(1), clock)
    reservation = await reserve(g)
    assert await committed(g) == RESERVED
    clock.now += 60  # the budget's baseline is reloaded while the call is in flight: its row is in it
    assert await committed(g) == RESERVED
    cost = Decimal("0.0003")
    completion = await recorded_as_the_gateway(g.ledger, reservation, CONTEXT, cost)
    assert await g.run(reservation, lambda: _returns(completion)) is completion
    assert await committed(g) == cost
    clock.now += 60
    assert await committed(g) == cost
    [row] = await g.ledger.calls(run_id="r")
    assert (row.call_id, row.outcome, row.cost) == (reservation.id, "ok", cost)


async def test_no_row_stays_in_flight_when_a_call_ends_without_one(disk: Callable[[], Ledger]) -> None:
    g = governor(disk(), Decimal(1))
    replayed, failed, cancelled = await reserve(g), await reserve(g), await reserve(g)
    reused = Completion("paid-earlier", "cheap", "DeepSeek", "ok", (), Usage(10, 10), Decimal("0.5"), 0, 1,
                        replayed=True)  # fmt: skip
    await g.run(replayed, lambda: _returns(reused))

    async def fails() -> Completion:  # a completer that keeps no ledger rows of its own
        raise ProviderUnavailable("down", model="cheap", status=503)

    with pytest.raises(ProviderUnavailable):
        await g.run(failed, fails)

    async def hangs() -> Completion:
        await asyncio.sleep(60)
        raise AssertionError("cancelled first")

    task = asyncio.ensure_future(g.run(cancelled, hangs))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = {r.call_id: (r.outcome, r.cost) for r in await g.ledger.calls(run_id="r")}
    assert rows == {
        failed.id: ("ProviderUnavailable", Decimal(0)),  # refused: nothing to pay
        cancelled.id: ("CancelledError", RESERVED),  # it may have reached the vendor: counted as reserved
    }  # and the reused answer left no row: it was paid for, and recorded, by the run that asked first
    assert await committed(g) == RESERVED


async def _returns(completion: Completion) -> Completion:
    return completion


def test_a_resumed_run_reuses_answers_recorded_but_never_checkpointed(vendors: Vendors, tmp_path: Path) -> None:
    folder = documents(tmp_path / "in", 4, sentences_each=20)
    out, models = tmp_path / "out.jsonl", vendors.models_yaml(tmp_path / "m.yaml")
    args = ("--input", str(folder), "--out", str(out), "--chunk-tokens", "120")
    first = run(tmp_path, models, *args)
    assert first.returncode == 0, first.stderr
    asked, summaries = vendors.server.count(), {r["id"]: r["summary"] for r in lines(out)}
    ledger = sqlite3.connect(tmp_path / "ledger.db")
    paid = ledger.execute("SELECT COUNT(*), SUM(cost_pico) FROM calls").fetchone()
    assert asked > 8 and paid[0] == asked
    # the crash this stands for: every call answered and recorded, no document written (nor checkpointed)
    out.unlink()
    with sqlite3.connect(out.with_suffix(".checkpoints.db")) as checkpoints:
        checkpoints.execute("DROP TABLE IF EXISTS checkpoints")
        checkpoints.execute("DROP TABLE IF EXISTS writes")
    again = run(tmp_path, models, *args)
    assert again.returncode == 0, again.stderr
    assert vendors.server.count() == asked, "an answer already paid for was bought again"
    assert {r["id"]: r["summary"] for r in lines(out)} == summaries
    assert ledger.execute("SELECT COUNT(*), SUM(cost_pico) FROM calls").fetchone() == paid


@pytest.fixture
def vendors() -> Iterator[Vendors]:
    v = Vendors()
    yield v
    v.server.stop()
