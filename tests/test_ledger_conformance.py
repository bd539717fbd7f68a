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
from polycascade.records import replace

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


HOURLY = (
    "SELECT hour, tenant, run_id, node, task_kind, data_class, model, vendor, jurisdiction, host_jurisdiction, "
    "outcome, calls, cost_pico, passes, fails, escalated FROM {hourly} WHERE calls <> 0"
)


Totals = tuple[set[tuple[object, ...]], dict[tuple[object, ...], int], set[tuple[object, ...]]]


def expected_totals(calls: list[CallRecord]) -> Totals:
    """What the running totals must hold, computed from the calls themselves."""
    from collections import Counter

    from polycascade.ledger import to_pico

    hourly: dict[tuple[object, ...], list[int]] = {}
    attempts = sorted((c for c in calls if c.node == "attempt"), key=lambda c: c.ts)
    followed: set[str] = set()
    by_task: dict[tuple[str, str], list[CallRecord]] = {}
    for a in attempts:
        by_task.setdefault((a.run_id, a.task_id), []).append(a)
    for chain in by_task.values():
        followed |= {a.call_id for a in chain[:-1]}
    for c in calls:
        key = (int(c.ts // 3600), c.tenant, c.run_id, c.node, c.task_kind, c.data_class, c.model, c.vendor,
               c.jurisdiction, c.host_jurisdiction, c.outcome)  # fmt: skip
        row = hourly.setdefault(key, [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += to_pico(c.cost)
        row[2] += c.verdict is True
        row[3] += c.verdict is False
        row[4] += c.call_id in followed
    denials: Counter[tuple[object, ...]] = Counter()
    for c in calls:
        for denial in ((c.decision or {}).get("rejected") or {}).values():
            if isinstance(denial, dict) and isinstance(denial.get("rule"), str):
                denials[(int(c.ts // 3600), c.tenant, c.run_id, c.task_kind, c.data_class, denial["rule"])] += 1
    tasks: dict[tuple[str, str], list[int]] = {}
    for c in calls:
        row = tasks.setdefault((c.run_id, c.task_id), [0, 0, 0])
        row[0] = max(row[0], int(c.ts // 3600))
        row[1] += c.outcome != IN_FLIGHT
        row[2] += to_pico(c.cost) if c.outcome != IN_FLIGHT else 0
    return (
        {(*k, *v) for k, v in hourly.items()},
        dict(denials),
        {(*k, *v) for k, v in tasks.items() if v[1]},  # a task with calls in flight only has none settled
    )


async def observed_totals(ledger: Ledger) -> Totals:
    hourly = {tuple(int(v) if i in (0, 11, 12, 13, 14, 15) else v for i, v in enumerate(row))
              for row in await ledger.totals(HOURLY)}  # fmt: skip
    denials = await ledger.totals(
        "SELECT hour, tenant, run_id, task_kind, data_class, rule, denials FROM {denials} WHERE denials <> 0"
    )
    tasks = await ledger.totals("SELECT run_id, task_id, hour, calls, cost_pico FROM {tasks} WHERE calls <> 0")
    return (
        hourly,
        {(int(r[0]), *r[1:6]): int(r[6]) for r in denials},
        {(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in tasks},
    )


async def test_running_totals_follow_every_write_rewrite_verdict_and_removal(ledger: Ledger) -> None:
    """Reports read per-hour totals the database keeps; whatever happens to the calls, they must equal a
    count over the calls."""
    import random

    rng = random.Random(7)
    t0 = 1_800_000_000.0
    ids: list[str] = []
    for i in range(120):
        task = f"t{rng.randrange(25)}"
        rejected = {f"x{j}": {"rule": rng.choice(["residency", "budget", "vendor_share"]), "reason": "r", "values": {}}
                    for j in range(rng.randrange(3))}  # fmt: skip
        if rng.random() < 0.1:
            rejected["odd"] = "not an object"  # tolerated, not counted
        rec = call(
            run_id=rng.choice(["r1", "r2"]), task_id=task, node=rng.choice(["attempt", "attempt", "evaluate"]),
            model=rng.choice(["a", "b", "c"]), tenant=rng.choice(["acme", "default"]),
            outcome=rng.choice(["ok", "ok", IN_FLIGHT, "RateLimited"]), cost=Decimal(rng.randrange(10**6)) / 10**9,
            decision={"rejected": rejected} if rng.random() < 0.7 else None, ts=t0 + i * 97.0,
        )  # fmt: skip
        await ledger.write(rec)
        ids.append(rec.call_id)
        if rng.random() < 0.3:  # the row in flight replaced by its outcome
            await ledger.write(replace(rec, outcome="ok", cost=rec.cost * 2))
    for call_id in rng.sample(ids, 40):
        await ledger.set_verdict(call_id, rng.random() < 0.6, None, "rules")
    for call_id in ids:
        got = await ledger.get(call_id)
        if got is not None and got.outcome == IN_FLIGHT:
            await ledger.close_in_flight(call_id, rng.choice([None, "Cancelled"]), Decimal("0.001"))
    hourly, denials, tasks = await observed_totals(ledger)
    want_hourly, want_denials, want_tasks = expected_totals(await ledger.calls())
    assert (hourly, denials) == (want_hourly, want_denials)
    # a task keeps the hour of the latest call it ever had (a removed row in flight may have been it)
    assert {(r, t, n, c) for r, t, _, n, c in tasks} == {(r, t, n, c) for r, t, _, n, c in want_tasks}
    latest = {(r, t): h for r, t, h, _, _ in tasks}
    assert all(latest[(r, t)] >= h for r, t, h, _, _ in want_tasks)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_ledger_written_before_running_totals_gets_them_filled_when_opened(
    backend: str, tmp_path: Path
) -> None:
    ledger = BACKENDS[backend](tmp_path)
    t0 = 1_800_000_000.0
    try:
        for i in range(30):
            rejected = {"m": {"rule": "residency", "reason": "r", "values": {}}}
            await ledger.write(call(task_id=f"t{i % 7}", node="attempt", ts=t0 + i * 301.0,
                                    decision={"rejected": rejected}, cost=Decimal(i) / 1000))  # fmt: skip
        want = expected_totals(await ledger.calls())
        # as a ledger from before: no totals, no triggers
        drop = ["DROP TABLE {hourly}", "DROP TABLE {denials}", "DROP TABLE {tasks}"]
        if isinstance(ledger, SQLiteLedger):
            drop += [f"DROP TRIGGER calls_rollup_{event}" for event in ("insert", "delete", "update")]
        else:
            drop.append(f"DROP FUNCTION {ledger.table}_rollup() CASCADE")  # type: ignore[attr-defined]
        for statement in drop:
            await ledger.totals(statement)
        await ledger.close()
        ledger = (
            SQLiteLedger(tmp_path / "ledger.db")
            if backend == "sqlite"
            else PostgresLedger(
                POSTGRES_URL,
                table=ledger.table,  # type: ignore[attr-defined]
            )
        )
        assert await observed_totals(ledger) == want
    finally:
        if isinstance(ledger, PostgresLedger):
            await ledger.drop()
        await ledger.close()


async def test_prune_removes_what_is_older_than_retention_and_its_totals(ledger: Ledger) -> None:
    t0 = 1_800_000_000.0
    old = [call(task_id="old", node="attempt", ts=t0 - 10 * 3600 + i, verdict=True, task_kind="qa") for i in range(3)]
    new = [call(task_id="new", node="attempt", ts=t0 + i, cost=Decimal("0.5")) for i in range(2)]
    for rec in old + new:
        await ledger.write(rec)
    assert await ledger.prune(t0 - 3600) == 3
    assert {r.call_id for r in await ledger.calls()} == {r.call_id for r in new}
    assert await ledger.tallies("qa") == {}
    assert await observed_totals(ledger) == expected_totals(await ledger.calls())
    assert await ledger.prune(t0 - 3600) == 0
