"""`polycascade export` memory and speed: a 1,000,000-call SQLite ledger beside a 10,000-call one.

    python bench/bench_export.py      # rewrites the "export" section of bench/RESULTS.md

Peak RSS is the export process's own (each run in a fresh wrapper process, so one run's peak
cannot hide another's); flat means it streams. The time to count the rows in SQLite is the floor
any export is measured against.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import publish

from polycascade import _ledger_sql as sql
from polycascade._ledger_sqlite import TABLE, SQLiteLedger
from polycascade.ledger import CallRecord

DECISION = {
    "chosen": "deepseek/deepseek-chat", "reason": "cheapest expected to be adequate (p_pass 0.82 ≥ 0.75)",
    "rejected": {"openai/gpt-4o-mini": {"rule": "residency", "reason": "vendor US not in [JP, EU]", "values": {}}},
    "policy": "jp-enterprise", "reserved_usd": "0.000410", "budgets": ["run:bench"],
}  # fmt: skip
MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def build(path: Path, n: int) -> None:
    db = sqlite3.connect(path)
    db.executescript(sql.schema(TABLE))  # the calls alone: the running totals are filled once, below
    marks = ", ".join("?" * len(sql.COLUMNS))
    template = CallRecord("", "deepseek/deepseek-chat", "DeepSeek", "CN", "ok", run_id="bench", task_id="t",
                          node="attempt", tenant="acme", host_jurisdiction="CN", input_tokens=812, output_tokens=143,
                          cost=Decimal("0.000283"), latency_s=1.2, decision=DECISION)  # fmt: skip
    row = list(sql.to_row(template))
    t0 = 1_750_000_000.0
    for start in range(0, n, 100_000):
        batch = []
        for i in range(start, min(n, start + 100_000)):
            row[0], row[1], row[3] = f"c{i:09d}", t0 + i * 0.05, f"doc{i // 3}"
            batch.append(tuple(row))
        db.executemany(f"INSERT INTO {TABLE} ({', '.join(sql.COLUMNS)}) VALUES ({marks})", batch)
        db.commit()
    db.close()
    asyncio.run(SQLiteLedger(path).close())  # opening it fills the running totals


def measure(sizes: tuple[int, ...] = (10_000, 1_000_000)) -> list[str]:
    rows = ["| calls | count rows s | export CSV s | calls/s | peak RSS MB | output MB |", "|---|---|---|---|---|---|"]
    cli = str(Path(sys.executable).with_name("polycascade"))
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            ledger, out = Path(tmp) / "ledger.db", Path(tmp) / "calls.csv"
            build(ledger, n)
            started = time.perf_counter()
            sqlite3.connect(ledger).execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()
            count_s = time.perf_counter() - started
            command = [cli, "export", "--ledger", str(ledger), "--format", "csv", "--out", str(out)]
            wall, rss_kb = subprocess.run(
                [sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True
            ).stdout.split()
            lines = sum(1 for _ in out.open()) - 1
            assert lines == n, (lines, n)
            rows.append(f"| {n:,} | {count_s:.3f} | {float(wall):.1f} | {n / float(wall):,.0f} | "
                        f"{int(rss_kb) / 1024:.0f} | {out.stat().st_size / 2**20:.0f} |")  # fmt: skip
    return [
        "`polycascade export --format csv` as a subprocess (start-up included) over a SQLite ledger whose rows each "
        f"carry a decision like `{json.dumps(DECISION)[:60]}…`.",
        "",
        *rows,
    ]


def main() -> int:
    return publish("export", "Audit export", {"Export of a large ledger": measure})


if __name__ == "__main__":
    raise SystemExit(main())
