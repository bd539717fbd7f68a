"""polycascade: route each LLM subtask to the cheapest adequate model, verify, escalate, govern.

    from polycascade import run_task
    result = run_task("Summarise …", models=["gpt-4o-mini", "deepseek/deepseek-chat", "gpt-4o"])

Everything public is named in `__all__`; modules starting with `_` are private.
"""

from __future__ import annotations

from .api import arun_task, cascade, cascade_node, run_task
from .catalog import Catalog, ModelSpec, UserModel
from .errors import (
    BudgetExceeded,
    CatalogError,
    ConfigError,
    ContentPolicyViolation,
    ContextWindowExceeded,
    EvaluatorConfigError,
    MalformedResponse,
    NetworkGuardError,
    NoEligibleModel,
    PolicyError,
    PolycascadeError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    RetryableProviderError,
)
from .ledger import CallRecord, Ledger, MemoryLedger
from .ledgers import open_ledger
from .tasks import Attempt, Preferences, Task, TaskResult, Verdict
from .types import CallContext, Completion, CompletionRequest, Message, ToolCall, Usage

__version__ = "0.1.0"

__all__ = [
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
]
