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
