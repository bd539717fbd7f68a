"""Loopback model servers for tests, yours included: scripted vendors and the real local model."""

from ._capable import capable, example_of
from ._local import LOCAL_MODEL_ID, LocalModel, smollm2_path
from ._scripted import Fault, Reply, ScriptedRequest, ScriptedServer, approx_tokens

__all__ = [
    "LOCAL_MODEL_ID",
    "Fault",
    "LocalModel",
    "Reply",
    "ScriptedRequest",
    "ScriptedServer",
    "approx_tokens",
    "capable",
    "example_of",
    "smollm2_path",
]
