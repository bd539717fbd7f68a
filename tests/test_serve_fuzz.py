"""`serve` fuzzed by schemathesis from its own OpenAPI description: whatever the body, no 5xx, every
response in the declared shape (OpenAI's errors included), and the server alive afterwards."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from polycascade._wire import openapi
from polycascade.catalog import ModelsFile
from polycascade.testing import ScriptedServer, capable

from .conftest import serving

KEY = "fuzz-tenant-key-0123456789"
SCHEMA = schemathesis.openapi.from_dict(openapi())
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda inner: st.lists(inner, max_size=3))
schemathesis.openapi.format("json-object", st.dictionaries(st.text(), _JSON, max_size=4).map(json.dumps))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with ScriptedServer(capable) as vendor:
        able = {"jurisdiction": "US", "capabilities": ["tools", "json_schema"]}
        models = [vendor.model("acme/small", vendor="Acme", **able), vendor.model("beta/large", vendor="Beta", **able)]
        models_file = ModelsFile(models=models).write(tmp / "models.yaml")
        policy = tmp / "policy.yaml"
        policy.write_text(yaml.safe_dump({"name": "fuzz", "models": ["acme/small", "beta/large"],
                                          "routes": {"cheap": {"models": ["acme/small"]}}}))  # fmt: skip
        tenants = tmp / "tenants.yaml"
        tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"key_env": "FUZZ_KEY"}}}))
        args = ["--policy", str(policy), "--models", str(models_file), "--tenants", str(tenants),
                "--ledger", str(Path(tmp) / "ledger.db"), "--no-local"]  # fmt: skip
        with serving(*args, env={**os.environ, "FUZZ_KEY": KEY}) as url:
            yield url.removesuffix("/v1")


@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_body_makes_serve_fail_or_answer_out_of_shape(served: str, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=served, headers={"Authorization": f"Bearer {KEY}"})


def test_the_server_is_alive_after_the_fuzzing(served: str) -> None:
    reply = requests.post(
        f"{served}/v1/chat/completions",
        json={"model": "cheap", "messages": [{"role": "user", "content": "still there?"}]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
