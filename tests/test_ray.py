"""`polycascade run --backend ray`: Ray locally (2 CPUs), one PostgreSQL ledger, caps held globally."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from polycascade._ledger_postgres import PostgresLedger
from polycascade.catalog import ModelsFile
from polycascade.testing import ScriptedRequest, ScriptedServer

from .conftest import run_cli
from .test_ledger_conformance import POSTGRES_URL
from .test_workflows import documents, lines

pytest.importorskip("ray", reason="Ray is the `ray` extra; CI installs it")


class Vendors:
    def __init__(self) -> None:
        self.server = ScriptedServer(self.respond).start()

    def respond(self, req: ScriptedRequest) -> str:
        return f"Summary of {req.prompt.split('<text>')[-1].strip()[:20]}"

    def models_yaml(self, path: Path) -> Path:
        vendors = [("v/a", "DeepSeek", "CN", "0.10"), ("v/b", "Mistral", "FR", "0.11"), ("v/c", "OpenAI", "US", "0.12")]
        models = [self.server.model(i, vendor=v, jurisdiction=j, input_per_mtok=p, output_per_mtok=p, quality=0.7)
                  for i, v, j, p in vendors]  # fmt: skip
        return ModelsFile(models=models).write(path)


@pytest.fixture
def vendors() -> Iterator[Vendors]:
    v = Vendors()
    yield v
    v.server.stop()


def test_ray_workers_share_caps_and_budget_through_postgresql(vendors: Vendors, tmp_path: Path) -> None:
    table = f"ray_{uuid.uuid4().hex[:10]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "name": "ray", "models": ["v/a", "v/b", "v/c"], "data_classes": {"internal": {}},
        "vendor_share": {"max_share": 0.4, "min_volume_usd": "0.00005"},
    }))  # fmt: skip
    folder = documents(tmp_path / "in", 30)
    out = tmp_path / "ray.jsonl"
    url = f"{POSTGRES_URL}?table={table}"
    models = vendors.models_yaml(tmp_path / "m.yaml")
    common = [
        "run",
        "summarise",
        "--backend",
        "ray",
        "--workers",
        "2",
        "--ledger",
        url,
        "--policy",
        str(policy),
        "--models",
        str(models),
        "--input",
        str(folder),
        "--out",
        str(out),
        "--no-local",
        "--no-progress",
    ]
    try:
        result = run_cli(*common, "--concurrency", "8", "--budget", "0.0003", cwd=tmp_path)
        assert result.returncode in (0, 4), result.stderr[-2000:]
        done = lines(out)
        assert done and len({d["id"] for d in done}) == len(done)
        spend = asyncio.run(_spend(url))
        total = sum(spend.values(), Decimal(0))
        assert total <= Decimal("0.0003"), total  # the budget held across both workers
        worst = Decimal("0.12") / 1_000_000 * 500  # one call's most (prompt estimate + max_tokens), generously
        for vendor, cost in spend.items():
            assert cost <= Decimal("0.4") * total + worst, (vendor, cost, total)  # the cap held globally
        assert len(spend) == 3, spend  # the cheapest vendor did not take everything
        if result.returncode == 4:
            assert "budget 'run'" in result.stderr
            resumed = run_cli(*common, "--budget", "1", cwd=tmp_path)
            assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert sorted(d["id"] for d in lines(out)) == sorted(f"doc{i:03d}.txt" for i in range(30))
        assert all(json.dumps(d) for d in lines(out))
    finally:
        asyncio.run(_drop(url))


async def _spend(url: str) -> dict[str, Decimal]:
    ledger = PostgresLedger.from_url(url)
    rows = await ledger.spend_by("vendor")
    await ledger.close()
    return {v: r.cost for v, r in rows.items()}


async def _drop(url: str) -> None:
    ledger = PostgresLedger.from_url(url)
    await ledger.drop()
    await ledger.close()
