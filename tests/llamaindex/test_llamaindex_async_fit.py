"""acomplete with image_documents decodes the images straight to the wrapped model's size, as complete does."""

from __future__ import annotations

import pytest
from llama_index.core.schema import ImageDocument
from llamaindex_fakes import PixelLLM, png_bytes

import smoothguard_llamaindex.base as base_module
from smoothguard_llamaindex import SmoothGuardLLM

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PixelLLM has no temperature setting


async def test_async_completion_with_image_documents_decodes_at_the_fit_size(monkeypatch):
    fits = []
    real = base_module.MessageMedia

    def spy(*args, **kwargs):
        fits.append(kwargs.get("fit"))
        return real(*args, **kwargs)

    monkeypatch.setattr(base_module, "MessageMedia", spy)
    guard = SmoothGuardLLM(llm=PixelLLM(), image_resize=(16, 16), n_samples=3, seed=0)
    sync = guard.complete("?", image_documents=[ImageDocument(image=png_bytes(200, size=64))])
    done = await guard.acomplete("?", image_documents=[ImageDocument(image=png_bytes(200, size=64))])
    assert len(fits) == 2 and all(f is not None for f in fits)
    assert done.additional_kwargs["smoothguard"]["noise"] == sync.additional_kwargs["smoothguard"]["noise"]
