"""`polycascade export`: one row per call for an auditor, in CSV, JSONL and Parquet, filtered by run,
tenant and time, streamed from the ledger, and without a key anywhere."""

from __future__ import annotations

import csv
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade import Task, run_task
from polycascade.catalog import Catalog
from polycascade.export import COLUMNS
from polycascade.ledgers import open_ledger
from polycascade.policies.config import DataClassRule, Policy
from polycascade.sync import run_sync
from polycascade.testing import ScriptedServer, capable

from .conftest import run_cli

CANARY = "sk-CANARY-export-5521"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs of two tenants, one with a model the policy's residency refuses."""
    path = tmp_path_factory.mktemp("export") / "ledger.db"
    os.environ["ACME_EXPORT_KEY"] = CANARY
    try:
        with ScriptedServer(capable) as s:
            jp = s.model("jp/model", vendor="Sakura", jurisdiction="JP", input_per_mtok="0.5", quality=0.9,
                         api_key_env="ACME_EXPORT_KEY")  # fmt: skip
            us = s.model("us/model", vendor="OpenAI", jurisdiction="US", input_per_mtok="0.1", quality=0.9)
            catalog = Catalog.bundled().with_models([jp, us])
            policy = Policy(name="jp-only", data_classes={"personal": DataClassRule(vendor_jurisdictions=["JP"])},
                            default_data_class="personal")  # fmt: skip
            for run, tenant in (("audit-1", "acme"), ("audit-1", "acme"), ("audit-2", "beta")):
                task = Task("Summarise: sales rose.", run_id=run, tenant=tenant)
                run_task(task, [jp, us], catalog=catalog, policy=policy, ledger=f"sqlite:///{path}")
    finally:
        del os.environ["ACME_EXPORT_KEY"]
    return path


def export(ledger: Path, *args: str) -> str:
    done = run_cli("export", "--ledger", str(ledger), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_csv_has_a_row_per_call_with_where_it_went_what_it_cost_and_why(ledger: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(export(ledger, "--run", "audit-1"))))
    calls = run_sync(_calls(ledger, "audit-1"))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(calls) >= 2
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(c.cost for c in calls) > 0
    answer = next(r for r in rows if r["node"] == "attempt")
    assert (answer["model"], answer["vendor_jurisdiction"], answer["host_jurisdiction"]) == ("jp/model", "JP", "JP")
    assert answer["tenant"] == "acme" and answer["data_class"] == "personal" and answer["policy"] == "jp-only"
    assert "us/model" in json.loads(answer["rejected"]) and "residency" in answer["rejected"]
    assert answer["reason"] and Decimal(answer["reserved_usd"]) >= Decimal(answer["cost_usd"])
    assert answer["time"].endswith("+00:00") and answer["outcome"] == "ok"


def test_the_three_formats_carry_the_same_rows_and_filters_narrow_them(ledger: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    as_csv = list(csv.DictReader(io.StringIO(export(ledger))))
    as_jsonl = [json.loads(line) for line in export(ledger, "--format", "jsonl").splitlines()]
    export(ledger, "--format", "parquet", "--out", str(tmp_path / "calls.parquet"))
    as_parquet = pq.read_table(tmp_path / "calls.parquet").to_pylist()
    assert [r["call_id"] for r in as_csv] == [r["call_id"] for r in as_jsonl] == [r["call_id"] for r in as_parquet]
    assert [Decimal(r["cost_usd"]) for r in as_csv] == [Decimal(r["cost_usd"]) for r in as_jsonl]
    assert [Decimal(r["cost_usd"]) for r in as_csv] == [r["cost_usd"] for r in as_parquet]  # decimal128, exact
    beta = list(csv.DictReader(io.StringIO(export(ledger, "--tenant", "beta"))))
    assert beta and {r["run_id"] for r in beta} == {"audit-2"}
    assert list(csv.DictReader(io.StringIO(export(ledger, "--since", "2099-01-01")))) == []
    assert len(list(csv.DictReader(io.StringIO(export(ledger, "--until", "2099-01-01T00:00+09:00"))))) == len(as_csv)


def test_no_key_in_any_row_and_bad_flags_are_named(ledger: Path) -> None:
    for fmt in ("csv", "jsonl"):
        assert CANARY not in export(ledger, "--format", fmt)
    bad = run_cli("export", "--ledger", str(ledger), "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr
    parquet = run_cli("export", "--ledger", str(ledger), "--format", "parquet")
    assert parquet.returncode == 2 and "--out" in parquet.stderr


async def _calls(path: Path, run_id: str) -> list:  # type: ignore[type-arg]
    store = open_ledger(path)
    try:
        return await store.calls(run_id=run_id)
    finally:
        await store.close()
