"""Keep credentials out of logs, ledgers, checkpoints and error text.

Any run of 8 or more characters taken from a secret is replaced, so a provider message that
echoes part of a key ("Incorrect API key provided: sk-abc…xyz") is scrubbed too. Secrets are the
values of variables whose names say so (`…_API_KEY`, `…TOKEN`, …), of every variable a models file
names in `api_key_env` or a tenants file in `key_env` (whatever it is called), and every key
handed to a vendor's client.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from functools import lru_cache

__all__ = [
    "RedactingFilter",
    "install_logging",
    "redact",
    "redactor",
    "register_secret",
    "register_secret_env",
    "secret_values",
]

_SECRET_NAME = re.compile(r"(API_KEY|_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_WINDOW = 8
MASK = "[redacted]"


_NAMED: set[str] = set()  # variables declared to hold keys, whatever their names
_VALUES: set[str] = set()  # keys seen on their way to a client


def register_secret_env(name: str) -> None:
    """The variable `name` holds a credential (a models file's `api_key_env`, a tenant's `key_env`)."""
    _NAMED.add(name)


def register_secret(value: str) -> None:
    """`value` is a credential (a key handed to a vendor's client)."""
    if len(value) >= _WINDOW:
        _VALUES.add(value)


def secret_values() -> tuple[str, ...]:
    """Every credential known: by its variable's name, declared, or seen."""
    named = (v for k, v in os.environ.items() if (k in _NAMED or _SECRET_NAME.search(k)) and len(v) >= _WINDOW)
    return tuple(sorted({*named, *_VALUES}))


@lru_cache(maxsize=8)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    windows = {s[i : i + _WINDOW] for s in secrets for i in range(len(s) - _WINDOW + 1)}
    if not windows:
        return None
    # Longest first so a whole key is consumed in one match rather than window by window.
    alternatives = sorted(set(secrets) | windows, key=len, reverse=True)
    return re.compile("|".join(re.escape(a) for a in alternatives))


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    return redactor(extra)(text)


def redactor(extra: tuple[str, ...] = ()) -> Callable[[str], str]:
    """`redact` for the secrets known now: for many texts in a row (an export), reading the
    environment once instead of per text."""
    pattern = _pattern(tuple(sorted(set(secret_values()) | set(extra))))
    if pattern is None:
        return str

    def scrub(text: str) -> str:
        previous = None
        while previous != text:  # masking can join two halves into a new window; repeat until stable
            previous, text = text, pattern.sub(MASK, text)
        return text

    return scrub


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_logging(level: str) -> None:
    """Log to stderr at `level`; every handler, ours and the libraries', scrubs secrets."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai", "polycascade"):
        logging.getLogger(name).setLevel(level.upper())
    protect_handlers()


def protect_handlers() -> None:
    """Add the redacting filter to every handler that exists now (libraries attach their own)."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
