"""The public surface is deliberate: adding or removing a name must change this test too."""

import subprocess
import sys

import polycascade

EXPECTED = {
    "Attempt",
    "BudgetExceeded",
    "CallContext",
    "CallRecord",
    "Catalog",
    "CatalogError",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "EvaluatorConfigError",
    "Ledger",
    "MalformedResponse",
    "MemoryLedger",
    "Message",
    "ModelSpec",
    "NetworkGuardError",
    "NoEligibleModel",
    "PolicyError",
    "PolycascadeError",
    "Preferences",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestRejected",
    "RetryableProviderError",
    "Task",
    "TaskResult",
    "ToolCall",
    "Usage",
    "UserModel",
    "Verdict",
    "__version__",
    "arun_task",
    "cascade",
    "cascade_node",
    "open_ledger",
    "run_task",
}


def test_all_is_pinned() -> None:
    assert set(polycascade.__all__) == EXPECTED
    assert all(hasattr(polycascade, name) for name in polycascade.__all__)


def test_errors_are_split_by_fault() -> None:
    assert issubclass(polycascade.CatalogError, polycascade.ConfigError)
    assert issubclass(polycascade.RateLimited, polycascade.RetryableProviderError)
    assert issubclass(polycascade.ContextWindowExceeded, polycascade.RequestRejected)
    assert not issubclass(polycascade.RequestRejected, polycascade.RetryableProviderError)


def test_errors_survive_pickling_with_their_values() -> None:
    """Errors cross processes (backtest workers, Ray actors), whatever their constructor takes."""
    import pickle
    from decimal import Decimal

    errors = [
        polycascade.ConfigError("policy.yaml:3: field 'x' is wrong"),
        polycascade.BudgetExceeded("run", Decimal("1"), Decimal("0.2"), Decimal("0.5")),
        polycascade.ProviderUnavailable("503 from upstream", model="acme/cheap"),
        polycascade.RateLimited("slow down", model="acme/cheap", retry_after=2.0),
        polycascade.NoEligibleModel({"acme/cheap": "residency: JP only"}),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_routing_and_replay_never_import_litellm() -> None:
    """LiteLLM takes seconds to import: only code that calls a model (`polycascade.gateway`) may load it."""
    code = (
        "import sys, backtest, graphs.cascade, graphs.documents, polycascade.governor, polycascade.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'openai')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
