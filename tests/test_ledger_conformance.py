"""One suite every ledger backend must pass."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade._ledger_postgres import PostgresLedger
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.ledger import IN_FLIGHT, CallRecord, Ledger, MemoryLedger, SpendRow, Tally, new_call_id
from polycascade.ledgers import open_ledger

POSTGRES_URL = os.environ.get("POLYCASCADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS: dict[str, Callable[[Path], Ledger]] = {
    "memory": lambda tmp: MemoryLedger(),
    "sqlite": lambda tmp: SQLiteLedger(tmp / "ledger.db"),
    "postgres": lambda tmp: PostgresLedger(POSTGRES_URL, table=f"calls_{uuid.uuid4().hex[:12]}"),
}


@pytest.fixture(params=sorted(BACKENDS))
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    backend = BACKENDS[request.param](tmp_path)
    yield backend
    if isinstance(backend, PostgresLedger):
        await backend.drop()  # each test has a table of its own
    await backend.close()


def call(**kw: object) -> CallRecord:
    base: dict[str, object] = dict(
        call_id=new_call_id(), model="m-cheap", vendor="DeepSeek", jurisdiction="CN", outcome="ok"
    )
    base.update(kw)
    return CallRecord(**base)  # type: ignore[arg-type]


async def test_round_trips_every_field(ledger: Ledger) -> None:
    rec = call(
        run_id="r",
        task_id="t",
        node="attempt",
        task_kind="extract",
        data_class="confidential",
        tenant="acme",
        host_jurisdiction="US",
        input_tokens=12,
        output_tokens=3,
        cost=Decimal("0.00000123"),
        latency_s=0.5,
        attempts=2,
        decision={"chosen": "m-cheap", "rejected": {"m-x": "residency"}},
    )
    await ledger.write(rec)
    assert await ledger.get(rec.call_id) == rec
    assert await ledger.get("missing") is None


async def test_costs_sum_exactly(ledger: Ledger) -> None:
    for _ in range(1000):
        await ledger.write(call(cost=Decimal("0.0000001")))
    spend = await ledger.spend_by("vendor")
    assert spend["DeepSeek"].cost == Decimal("0.0001")
    assert spend["DeepSeek"].calls == 1000


async def test_spend_by_vendor_over_a_window_and_by_run(ledger: Ledger) -> None:
    now = time.time()
    await ledger.write(call(vendor="OpenAI", cost=Decimal("2"), ts=now - 90_000, run_id="old"))
    await ledger.write(call(vendor="OpenAI", cost=Decimal("1"), ts=now, run_id="r1"))
    await ledger.write(call(vendor="Mistral", cost=Decimal("3"), ts=now, run_id="r2"))
    day = await ledger.spend_by("vendor", since=now - 86_400)
    assert {v: r.cost for v, r in day.items()} == {"OpenAI": Decimal("1"), "Mistral": Decimal("3")}
    run = await ledger.spend_by("vendor", run_id="r1")
    assert {v: (r.calls, r.cost) for v, r in run.items()} == {"OpenAI": (1, Decimal("1"))}
    by_juris = await ledger.spend_by("jurisdiction")
    assert (by_juris["CN"].calls, by_juris["CN"].cost) == (3, Decimal("6"))


async def test_spend_by_rejects_unknown_columns(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="cannot group"):
        await ledger.spend_by("cost; DROP TABLE calls")
    with pytest.raises(ValueError, match="cannot group or filter"):
        await ledger.spend_by("vendor", **{"1=1; --": "x"})


async def test_spend_filters_by_task_and_tenant_and_leaves_out_self_hosted(ledger: Ledger) -> None:
    await ledger.write(call(task_id="t1", tenant="acme", cost=Decimal("1")))
    await ledger.write(call(task_id="t1", tenant="acme", cost=Decimal("0"), vendor="Local", host_jurisdiction="self"))
    await ledger.write(call(task_id="t2", tenant="beta", cost=Decimal("2")))
    by_task = await ledger.spend_by("task_id", task_id="t1")
    assert (by_task["t1"].calls, by_task["t1"].cost) == (2, Decimal("1"))
    api = await ledger.spend_by("vendor", api_only=True)
    assert set(api) == {"DeepSeek"} and api["DeepSeek"].calls == 2
    assert (await ledger.spend_by("tenant", tenant="beta"))["beta"].cost == Decimal("2")


async def test_a_call_recorded_again_replaces_itself_in_every_filter(ledger: Ledger) -> None:
    await ledger.write(call(call_id="same", task_id="t1", cost=Decimal("1")))
    await ledger.write(call(call_id="same", task_id="t1", cost=Decimal("3")))
    by_task = await ledger.spend_by("task_id", task_id="t1")
    assert (by_task["t1"].calls, by_task["t1"].cost) == (1, Decimal("3"))
    assert (await ledger.spend_by("vendor"))["DeepSeek"].calls == 1


async def test_a_row_in_flight_counts_until_its_call_replaces_or_closes_it(ledger: Ledger) -> None:
    reserved = Decimal("0.5")
    for call_id in ("answered", "lost", "unsent", "cancelled"):
        await ledger.write(call(call_id=call_id, task_id="t", outcome=IN_FLIGHT, cost=reserved))
    assert (await ledger.spend_by("task_id", task_id="t"))["t"] == SpendRow(4, 4 * reserved)
    await ledger.write(call(call_id="answered", task_id="t", cost=Decimal("0.1")))  # the call's own row
    await ledger.close_in_flight("answered", "CancelledError", reserved)  # has an outcome: left alone
    await ledger.close_in_flight("unsent", None, Decimal(0))
    await ledger.close_in_flight("cancelled", "CancelledError", reserved)
    rows = {r.call_id: r for r in await ledger.calls(task_id="t")}
    assert set(rows) == {"answered", "lost", "cancelled"}
    assert (rows["answered"].outcome, rows["answered"].cost) == ("ok", Decimal("0.1"))
    assert (rows["lost"].outcome, rows["lost"].cost) == (IN_FLIGHT, reserved)  # a crash: maybe billed
    assert (rows["cancelled"].outcome, rows["cancelled"].cost) == ("CancelledError", reserved)
    assert (await ledger.spend_by("task_id", task_id="t"))["t"].cost == Decimal("1.1")


async def test_stream_reads_calls_oldest_first_within_bounds_and_filters(ledger: Ledger) -> None:
    t0 = 1_750_000_000.0
    for i in range(5000):  # more than a page
        await ledger.write(call(call_id=f"c{i:05d}", ts=t0 + i, run_id="r" if i % 2 else "s", tenant="acme"))
    streamed = [r.call_id async for r in ledger.stream(run_id="r", since=t0 + 10, until=t0 + 4010)]
    assert streamed == [f"c{i:05d}" for i in range(11, 4010, 2)]
    assert [r async for r in ledger.stream(tenant="nobody")] == []
    assert len([r async for r in ledger.stream()]) == 5000
    with pytest.raises(ValueError, match="cannot group or filter"):
        [r async for r in ledger.stream(cost_pico=1)]


async def test_calls_by_run_and_task(ledger: Ledger) -> None:
    await ledger.write(call(run_id="r", task_id="a"))
    await ledger.write(call(run_id="r", task_id="b"))
    await ledger.write(call(run_id="s", task_id="a"))
    assert len(await ledger.calls(run_id="r")) == 2
    assert len(await ledger.calls(run_id="r", task_id="a")) == 1
    assert len(await ledger.calls()) == 3


async def test_verdicts_tally_per_kind_and_model(ledger: Ledger) -> None:
    ids = []
    for kind, model, passed in [
        ("qa", "a", True),
        ("qa", "a", False),
        ("qa", "a", False),
        ("qa", "b", True),
        ("sum", "a", True),
    ]:
        rec = call(task_kind=kind, model=model)
        ids.append(rec.call_id)
        await ledger.write(rec)
        await ledger.set_verdict(rec.call_id, passed, 0.5, "rules")
    await ledger.write(call(task_kind="qa", model="a"))  # no verdict yet: not counted
    assert await ledger.tallies("qa") == {("qa", "a"): Tally(1, 2), ("qa", "b"): Tally(1, 0)}
    assert (await ledger.tallies())[("sum", "a")] == Tally(1, 0)
    stored = await ledger.get(ids[0])
    assert stored is not None and (stored.verdict, stored.score, stored.evaluator) == (True, 0.5, "rules")


def test_open_ledger_urls(tmp_path: Path) -> None:
    assert isinstance(open_ledger(POSTGRES_URL), PostgresLedger)
    assert isinstance(open_ledger("memory://"), MemoryLedger)
    assert isinstance(open_ledger(tmp_path / "x.db"), SQLiteLedger)
    assert isinstance(open_ledger(f"sqlite:///{tmp_path / 'y.db'}"), SQLiteLedger)


async def test_sqlite_ledger_is_durable_across_connections(tmp_path: Path) -> None:
    first = SQLiteLedger(tmp_path / "l.db")
    rec = call(cost=Decimal("0.5"))
    await first.write(rec)
    await first.close()
    second = SQLiteLedger(tmp_path / "l.db")
    assert await second.get(rec.call_id) == rec
    await second.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_tallies_are_read_once_per_refresh_and_see_other_processes_then(backend: str, tmp_path: Path) -> None:
    """Routing reads tallies per decision: a SQL ledger keeps them (its own verdicts at once), and reloads
    them every `refresh_s` to learn what other processes recorded."""
    ours = BACKENDS[backend](tmp_path)
    table = getattr(ours, "table", "")
    other = SQLiteLedger(tmp_path / "ledger.db") if backend == "sqlite" else PostgresLedger(POSTGRES_URL, table=table)
    opened = [ours, other]
    try:
        mine, theirs = call(task_kind="qa", model="a"), call(task_kind="qa", model="a")
        await ours.write(mine)
        await ours.write(theirs)
        assert await ours.tallies("qa") == {}
        await ours.set_verdict(mine.call_id, True, None, "rules")
        await other.set_verdict(theirs.call_id, False, None, "rules")
        assert await ours.tallies("qa") == {("qa", "a"): Tally(1, 0)}  # ours at once; theirs not yet
        ours._tallies.refresh_s = 0  # type: ignore[attr-defined]
        assert await ours.tallies("qa") == {("qa", "a"): Tally(1, 1)}
    finally:
        if isinstance(ours, PostgresLedger):
            await ours.drop()
        for ledger in opened:
            await ledger.close()
