"""`polycascade run --backend ray`: Ray locally (2 CPUs), one PostgreSQL ledger, caps held globally."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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


def test_documents_spread_over_two_ray_nodes_started_apart_and_the_budget_holds(
    vendors: Vendors, tmp_path: Path
) -> None:
    """A head and a second node, each its own `ray start` (one CPU each, so one worker each), the run
    joining them through RAY_ADDRESS, one PostgreSQL ledger between them."""
    ray_cli, port = str(Path(sys.executable).with_name("ray")), _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}  # Ray's own token, as in production
    node = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000", "--disable-usage-stats"]
    table = f"ray_{uuid.uuid4().hex[:10]}"
    url = f"{POSTGRES_URL}?table={table}"
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *node],
                       check=True, capture_output=True, env=env, timeout=180)  # fmt: skip
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", *node],
                       check=True, capture_output=True, env=env, timeout=180)  # fmt: skip
        folder, out = documents(tmp_path / "in", 24), tmp_path / "nodes.jsonl"
        result = run_cli("run", "summarise", "--backend", "ray", "--workers", "2", "--ledger", url,
                         "--models", str(vendors.models_yaml(tmp_path / "m.yaml")), "--input", str(folder),
                         "--out", str(out), "--no-local", "--no-progress", "--budget", "0.01", cwd=tmp_path,
                         env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "24 done on 2 Ray nodes" in result.stderr, result.stderr[-2000:]
        assert sorted(d["id"] for d in lines(out)) == sorted(f"doc{i:03d}.txt" for i in range(24))
        assert Decimal(0) < sum(asyncio.run(_spend(url)).values(), Decimal(0)) <= Decimal("0.01")
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=180)
        asyncio.run(_drop(url))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
