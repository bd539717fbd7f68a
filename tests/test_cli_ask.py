"""`polycascade ask` as a user runs it: a subprocess, scripted vendors on loopback, the real local model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .conftest import Vendors, run_cli


def ask(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return run_cli("ask", *args, cwd=cwd, env=env)


def test_ask_with_no_keys_uses_the_local_model_and_is_honestly_unverified(tmp_path: Path) -> None:
    result = ask("What is the capital of France? Answer in one word.", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["answer"]
    assert out["status"] == "unverified"
    assert out["attempts"][0]["model"] == "local/smollm2-135m-instruct"
    assert "sanity" in out["stop_reason"]
    assert (tmp_path / "polycascade.db").exists()


def test_ask_escalates_across_loopback_vendors_and_explains(vendors: Vendors, tmp_path: Path) -> None:
    models = vendors.models_yaml(tmp_path / "models.yaml")
    result = ask(
        "What is the capital of France?",
        "--models",
        str(models),
        "--no-local",
        "--judge",
        "v/judge",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "verified" and out["answer"] == "Paris"
    attempts = out["attempts"]
    assert [a["model"] for a in attempts[:2]] == ["v/cheap", "v/judge"] or attempts[0]["model"] == "v/cheap"
    assert attempts[0]["verdict"]["passed"] is False and "scored 1/10" in attempts[0]["verdict"]["reason"]
    assert attempts[-1]["verdict"]["passed"] is True
    assert all(a["why"] for a in attempts)
    table = ask("What is the capital of France?", "--models", str(models), "--no-local", cwd=tmp_path)
    assert table.returncode == 0 and "verified" in table.stdout and "v/cheap" in table.stdout


def test_ask_rejects_a_bad_schema_reference(tmp_path: Path) -> None:
    result = ask("hi", "--schema", "nowhere", "--no-local", "--model", "gpt-4o-mini", cwd=tmp_path)
    assert result.returncode == 2 and "module:Model" in result.stderr


def test_ask_fails_closed_with_exit_1_when_no_model_may_take_the_data(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\nmodels: [gpt-4o-mini]\ndata_classes:\n  internal: {}\n  personal: {api: false, self_hosted: false}\n"
    )
    result = ask("My Number is 1234", "--policy", str(policy), "--data-class", "personal", "--no-local",
                 "--models", str(tmp_path / "none.yaml"), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "none.yaml" in result.stderr  # a missing models file is named
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-used-0000"}
    result = run_cli("ask", "My Number is 1234", "--policy", str(policy), "--data-class", "personal", "--no-local",
                     cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 1
    assert "residency" in result.stderr
