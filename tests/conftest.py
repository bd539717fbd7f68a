"""Shared fixtures. Every model call in the suite goes to a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

os.environ["POLYCASCADE_LOOPBACK_ONLY"] = "1"  # the gateway's guard; subprocesses inherit it
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from polycascade.catalog import Catalog, ModelsFile, ModelSpec, UserModel
from polycascade.completer import call_record
from polycascade.governor import Reservation
from polycascade.ledger import Ledger
from polycascade.testing import LocalModel, ScriptedRequest
from polycascade.types import CallContext, Completion, CompletionRequest, Usage


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    """The real SmolLM2 served by llama.cpp, shared by the whole session (it starts in ~1 s)."""
    with LocalModel() as model:
        yield model


class Vendors:
    """A scripted server posing as cheap (DeepSeek, CN), mid (Mistral, FR), strong (OpenAI, US) and
    a judge (Anthropic, US). `answers[model]` is what each model says; the judge scores 9 when the
    answer contains `right`, else 1."""

    def __init__(self) -> None:
        from polycascade.testing import ScriptedServer

        self.right = "Paris"
        self.answers: dict[str, str] = {"cheap": "Lyon", "mid": "Paris", "strong": "Paris"}
        self.server = ScriptedServer(self._respond).start()

    def _respond(self, req: ScriptedRequest) -> str:
        if req.model == "judge":
            answer = req.prompt.split("<answer>")[-1].split("</answer>")[0]
            return "SCORE: 9" if self.right in answer else "SCORE: 1"
        return self.answers[req.model]

    def models(self) -> list[UserModel]:
        s = self.server
        return [
            s.model(
                "v/cheap",
                vendor="DeepSeek",
                jurisdiction="CN",
                input_per_mtok="0.1",
                output_per_mtok="0.2",
                quality=0.7,
            ),
            s.model("v/mid", vendor="Mistral", jurisdiction="FR", input_per_mtok="1", output_per_mtok="2", quality=0.8),
            s.model(
                "v/strong", vendor="OpenAI", jurisdiction="US", input_per_mtok="10", output_per_mtok="20", quality=0.95
            ),
            s.model(
                "v/judge", vendor="Anthropic", jurisdiction="US", input_per_mtok="3", output_per_mtok="15", quality=0.95
            ),
        ]

    def catalog(self) -> Catalog:
        return Catalog.bundled().with_models(self.models())

    def models_yaml(self, path: Path) -> Path:
        return ModelsFile(models=self.models()).write(path)


@pytest.fixture
def vendors() -> Iterator[Vendors]:
    v = Vendors()
    yield v
    v.server.stop()


POLYCASCADE = str(Path(sys.executable).with_name("polycascade"))  # the console script of this venv


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None, start_s: float = 120) -> Iterator[str]:
    """`polycascade serve ARGS` on a free loopback port, until the block ends; yields its base URL."""
    with listening("serve", *args, env=env, start_s=start_s) as root:
        yield f"{root}/v1"


@contextlib.contextmanager
def listening(command: str, *args: str, env: dict[str, str] | None = None, start_s: float = 120) -> Iterator[str]:
    """`polycascade COMMAND ARGS` (a server) on a free loopback port, until the block ends; yields its root URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [POLYCASCADE, command, "--port", str(port), *args], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + start_s
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited: {proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command} did not listen within {start_s} s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POLYCASCADE, *args], capture_output=True, text=True, timeout=180, cwd=cwd, env=env)


def make_spec(
    id: str,
    price_per_mtok: str,
    quality: float = 0.7,
    vendor: str = "V",
    jurisdiction: str = "US",
    host_jurisdiction: str | None = None,
    hosting: str = "api",
    window: int = 8192,
) -> ModelSpec:
    """A catalog entry for pure policy tests (no endpoint: never called)."""
    price = Decimal(price_per_mtok) / 1_000_000
    return ModelSpec(
        id=id,
        provider="openai",
        litellm_model=f"openai/{id}",
        vendor=vendor,
        jurisdiction=jurisdiction,
        host=vendor,
        host_jurisdiction=host_jurisdiction or jurisdiction,
        hosting=hosting,  # type: ignore[arg-type]
        open_weights=False,
        input_price=price,
        output_price=price * 2,
        context_window=window,
        max_output_tokens=4096,
        quality=quality,
    )


async def recorded_as_the_gateway(
    ledger: Ledger, reservation: Reservation, context: CallContext, cost: Decimal, tokens: int = 10
) -> Completion:
    """What the gateway does for a reserved call it made: the call's own ledger row, under the
    reservation's id (replacing the row in flight). The test then settles, as `Governor.run` does."""
    spec = reservation.spec
    completion = Completion(reservation.id, spec.id, spec.vendor, "ok", (), Usage(tokens, tokens), cost, 0.01, 1)
    request = CompletionRequest.of(spec.id, "x", context=context, call_id=reservation.id)
    await ledger.write(call_record(spec, request, reservation.id, 0.01, 1, "ok", completion))
    return completion
