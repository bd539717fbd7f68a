"""The public surface is deliberate: adding or removing a name must change this test too."""

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
