"""Shared fixtures. Every model call in the suite goes to a server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["POLYCASCADE_LOOPBACK_ONLY"] = "1"  # the gateway's guard; subprocesses inherit it
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from polycascade.testing import LocalModel  # noqa: E402


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    """The real SmolLM2 served by llama.cpp, shared by the whole session (it starts in ~1 s)."""
    with LocalModel() as model:
        yield model
