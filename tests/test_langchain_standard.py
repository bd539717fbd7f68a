"""LangChain's own standard suites (`langchain-tests`) against `PolycascadeChat`.

Unit: construction, serialisation, tool binding, structured output. Integration: invoke, stream,
batch, usage, tools, structured output and an agent loop, over scripted vendors on 127.0.0.1 that
behave as a capable model would (`polycascade.testing.capable`). A test is switched off only by
the suite's own capability flags, each with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from polycascade.agents.chat_model import PolycascadeChat
from polycascade.catalog import Catalog
from polycascade.testing import ScriptedServer, capable


class _PolycascadeChat:
    """What both suites are told about the model under test."""

    @property
    def chat_model_class(self) -> type[PolycascadeChat]:
        return PolycascadeChat

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True


class TestPolycascadeChatUnit(_PolycascadeChat, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"models": ["gpt-4o-mini", "deepseek/deepseek-chat"]}

    # Switched off, by the suite's own flags: `init_from_env_params` (no setting comes from the
    # environment: keys are the vendors', read by the gateway) and `test_serdes` (a chat model holding
    # a live runtime is not LangChain-serialisable; `is_lc_serializable` stays False).


_SERVER: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _vendor() -> Iterator[None]:
    with ScriptedServer(capable) as server:
        able = {"vendor": "Acme", "jurisdiction": "US", "capabilities": ["tools", "json_schema"]}
        models = [
            server.model("acme/small", input_per_mtok="0.1", quality=0.8, **able),
            server.model("acme/large", input_per_mtok="1", quality=0.9, **able),
        ]
        _SERVER.update(catalog=Catalog.bundled().with_models(models), models=[m.id for m in models])
        yield
        _SERVER.clear()


class TestPolycascadeChatIntegration(_PolycascadeChat, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"models": _SERVER["models"], "catalog": _SERVER["catalog"]}

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "acme/large"  # `model=` on a call pins it to that pool member

    @property
    def has_tool_choice(self) -> bool:
        return False  # the cascade decides whether an answer calls a tool; a forced choice is not passed on

    @property
    def supports_json_mode(self) -> bool:
        return False  # structured output takes a schema: the cascade validates answers against it

    # Also off: images and PDFs inside tool messages (as above), Anthropic-format inputs
    # (`supports_anthropic_inputs`) and the VCR timing test
    # (`enable_vcr_tests`): recorded cassettes would replay a vendor, and ours run on 127.0.0.1.

    @property
    def supports_image_inputs(self) -> bool:
        return False  # the cascade routes text; images are not passed on

    @property
    def supports_audio_inputs(self) -> bool:
        return False  # as above

    @property
    def supports_pdf_inputs(self) -> bool:
        return False  # as above
