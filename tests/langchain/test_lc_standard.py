"""langchain-tests standard suites for ChatSmoothGuard around FakeVLM (a scripted multimodal chat model).

The integration suite downloads its sample image, audio and PDF from the internet. Those downloads are served
from memory here (a 32x32 PNG, a 0.1 s WAV, a one-page PDF), so the suite's image, audio, PDF, tool-message and
Anthropic-input tests run offline on the exact content blocks the suite builds.
"""

from __future__ import annotations

import base64
import types
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_fakes import FakeVLM, png_b64, wav_b64

from smoothguard_langchain import ChatSmoothGuard

# The suite passes temperature/max_tokens/... to every model it builds; ChatSmoothGuard warns that it ignores them.
pytestmark = [pytest.mark.filterwarnings("ignore:ChatSmoothGuard ignores:UserWarning"),
              pytest.mark.filterwarnings("ignore:LANGCHAIN_TESTS_USER_AGENT:UserWarning")]  # nothing is downloaded

CHILD_RUNS = ("by design: the inner call is a child run of the guard's run (issue 5), so a callback handler sees "
              "on_chat_model_start twice (guard + candidate), not once; test_lc_chat_model checks the rest")

PDF = (b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj "
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


def _params() -> dict[str, Any]:
    return {"model": FakeVLM(), "n_samples": 3, "seed": 0}


class TestChatSmoothGuardUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatSmoothGuard]:
        return ChatSmoothGuard

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @pytest.mark.xfail(reason="loads(allowed_objects='all') admits only the classes in langchain-core's own mapping, "
                       "which a third-party package is not in; test_lc_serialise round-trips ChatSmoothGuard with "
                       "allowed_objects=[ChatSmoothGuard, ...]", strict=True)
    def test_serdes(self, *args: Any, **kwargs: Any) -> None:
        super().test_serdes(*args, **kwargs)


class _OfflineHttpx:
    """Stands in for the suite's ``httpx`` module: ``get(url)`` answers from memory."""

    @staticmethod
    def get(url: str, **kwargs: Any) -> Any:
        if url.endswith(".png"):
            content = base64.b64decode(png_b64(seed=1))
        elif url.endswith(".wav"):
            content = base64.b64decode(wav_b64())
        elif url.endswith(".pdf"):
            content = PDF
        else:
            raise AssertionError(f"unexpected download {url}")
        return types.SimpleNamespace(content=content, status_code=200)


class TestChatSmoothGuardIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _offline_downloads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import langchain_tests.integration_tests.chat_models as suite

        monkeypatch.setattr(suite, "httpx", _OfflineHttpx)

    @property
    def chat_model_class(self) -> type[ChatSmoothGuard]:
        return ChatSmoothGuard

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return False  # the suite's URL variant makes the guard fetch from GitHub; test_lc_blocks fetches locally

    @property
    def supports_audio_inputs(self) -> bool:
        return True

    @property
    def supports_pdf_inputs(self) -> bool:
        return False  # fail closed: a PDF cannot be smoothed, so it is refused (unsmoothable_media="error")

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False  # as supports_pdf_inputs; test_fail_closed.py checks the refusal and the pass-through

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "fake-vlm-large"

    @pytest.mark.xfail(reason=CHILD_RUNS, strict=True)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: Any, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=CHILD_RUNS, strict=True)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: Any, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)
