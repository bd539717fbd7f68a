"""Every error polycascade raises, split by whose fault it is.

    PolycascadeError
    ├── ConfigError                  the user's configuration is wrong; fix the file or the call
    │   ├── CatalogError             unknown model, missing price, bad models file
    │   ├── PolicyError              a policy file or rule is invalid
    │   ├── EvaluatorConfigError     an evaluator cannot run as configured (e.g. judge == answer vendor)
    │   └── NetworkGuardError        a non-loopback call was attempted while the guard is on
    ├── BudgetExceeded               a budget would be overrun; carries which one, its limit and what is left
    ├── NoEligibleModel              every candidate was rejected; carries the reasons
    └── ProviderError                the model vendor failed; retrying or failing over may help
        ├── RetryableProviderError   429, 5xx, timeouts, connection errors
        │   ├── RateLimited
        │   ├── ProviderUnavailable
        │   └── ProviderTimeout
        ├── MalformedResponse        the vendor answered with a body we cannot parse
        └── RequestRejected          4xx: the request itself was refused; retrying will not help
            ├── ContextWindowExceeded   the prompt does not fit; route to a larger-context model
            └── ContentPolicyViolation  the vendor refused the content

Messages carry the values involved and say what to do. They never contain secrets: provider text
is passed through `polycascade._secrets.redact` before it reaches an exception.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = [
    "BudgetExceeded",
    "CatalogError",
    "ConfigError",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "EvaluatorConfigError",
    "MalformedResponse",
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
]


class PolycascadeError(Exception):
    """Base of every polycascade error."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross processes (backtest workers, Ray actors). Pickle rebuilds an exception by
        # calling its class with `args`, which fails for errors whose __init__ takes other
        # arguments; restore the state as it is instead.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[PolycascadeError], args: tuple[Any, ...], state: dict[str, Any]) -> PolycascadeError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(PolycascadeError):
    """The user's configuration is wrong. The message says which value and how to fix it.

    `parameter` names the Python parameter at fault, as the message does in backquotes; the CLI puts
    its own flag in their place.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class CatalogError(ConfigError):
    """A model is unknown, has no price, or a models file is invalid."""


class PolicyError(ConfigError):
    """A policy file or rule is invalid."""


class EvaluatorConfigError(ConfigError):
    """An evaluator cannot run as configured."""


class NetworkGuardError(ConfigError):
    """A request to a non-loopback address was attempted while the network guard is on."""


class BudgetExceeded(PolycascadeError):
    """A call would push a budget past its limit. Nothing was spent on the refused call."""

    def __init__(self, budget: str, limit: Decimal, remaining: Decimal, needed: Decimal) -> None:
        self.budget, self.limit, self.remaining, self.needed = budget, limit, remaining, needed
        super().__init__(
            f"budget {budget!r} exceeded: limit ${limit}, ${remaining} left, "
            f"this call may cost up to ${needed}. Raise the limit or lower max_tokens."
        )


class NoEligibleModel(PolycascadeError):
    """Every candidate model was rejected. `reasons` maps model id to why."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        listing = "; ".join(f"{m}: {r}" for m, r in sorted(reasons.items())) or "no candidates"
        super().__init__(
            f"no eligible model ({listing}). Add a model that satisfies the policy, "
            "or relax the rule that rejects them."
        )


class ProviderError(PolycascadeError):
    """The model vendor failed. `model` and `status` say which call and how."""

    def __init__(self, message: str, *, model: str, status: int | None = None) -> None:
        self.model, self.status = model, status
        super().__init__(f"{model}: {message}")

    @property
    def summary(self) -> str:
        """What went wrong without the vendor's words (which may echo a key or a prompt): class and status."""
        return f"{type(self).__name__} (HTTP {self.status})" if self.status else type(self).__name__


class RetryableProviderError(ProviderError):
    """A transient provider failure; `retry_after` is the vendor's hint in seconds, if any."""

    def __init__(
        self, message: str, *, model: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class RateLimited(RetryableProviderError):
    """HTTP 429."""


class ProviderUnavailable(RetryableProviderError):
    """HTTP 5xx or a connection failure."""


class ProviderTimeout(RetryableProviderError):
    """The vendor did not answer in time."""


class MalformedResponse(RetryableProviderError):
    """The vendor's body could not be parsed. Retried: it is usually a transient proxy fault."""


class RequestRejected(ProviderError):
    """HTTP 4xx other than 429: retrying the same request will not help."""


class ContextWindowExceeded(RequestRejected):
    """The prompt does not fit the model's context window."""


class ContentPolicyViolation(RequestRejected):
    """The vendor refused the content."""
