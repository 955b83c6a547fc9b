"""Guard steps in query engines: the stock engine with SmoothGuardLLM, and GuardedQueryEngine with query images."""

from __future__ import annotations

import base64
import json

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import ImageNode, QueryBundle, TextNode
from llamaindex_fakes import BRIGHT, DARK, PixelLLM, png_bytes

from smoothguard.errors import MediaError
from smoothguard_llamaindex import GuardedQueryEngine, SmoothGuardLLM

N = 4


def b64png(value: int) -> str:
    return base64.b64encode(png_bytes(value)).decode()


@pytest.fixture
def image_index(tmp_path):
    """Two image nodes (one base64, one file path) and a text node, embedded with MockEmbedding."""
    path = tmp_path / "night.png"
    path.write_bytes(png_bytes(25))
    nodes = [ImageNode(image=b64png(230), text="a bright photo"), ImageNode(image_path=str(path), text="a night photo"),
             TextNode(text="Photos in this album were taken in 2024.")]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))


def docstore_snapshot(index: VectorStoreIndex) -> dict:
    return {k: v.model_dump() for k, v in index.docstore.docs.items()}


def guard(inner, **settings) -> SmoothGuardLLM:
    return SmoothGuardLLM(llm=inner, **{"n_samples": N, "seed": 0, **settings})


async def test_text_rag_with_mock_llm():
    index = VectorStoreIndex([TextNode(text="Cats purr."), TextNode(text="Dogs bark.")],
                             embed_model=MockEmbedding(embed_dim=8))
    llm = guard(MockLLM(max_tokens=4))
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)
    response = engine.query("What do cats do?")
    assert str(response) == "text text text text" and len(response.source_nodes) == 2
    assert str(await engine.aquery("What do cats do?")) == "text text text text"
    streaming = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True).query("What do cats do?")
    assert isinstance(streaming, StreamingResponse) and str(streaming).strip() == "text text text text"


async def test_multimodal_rag_sends_retrieved_images_through_the_guard(image_index):
    inner = PixelLLM()
    engine = image_index.as_query_engine(llm=guard(inner), multimodal=True, similarity_top_k=3)
    before = docstore_snapshot(image_index)
    response = engine.query("Describe the photos.")
    assert len(inner.calls) == N                                     # one synthesis call, N candidates
    assert all(len(call["images"]) == 2 for call in inner.calls)     # both retrieved images in every call
    assert {len({c["images"][k].tobytes() for c in inner.calls}) for k in (0, 1)} == {N}
    assert str(response) in (BRIGHT, DARK) and len(response.source_nodes) == 3
    assert docstore_snapshot(image_index) == before
    response = await engine.aquery("Describe the photos.")
    assert len(inner.calls) == 2 * N and str(response) in (BRIGHT, DARK)


def test_context_window_estimate_and_its_override(image_index):
    # an inner model reporting a small window makes the synthesiser split two images into two LLM calls ...
    small = PixelLLM(window=3900)
    image_index.as_query_engine(llm=guard(small), multimodal=True, similarity_top_k=3).query("Describe.")
    assert len(small.calls) == 2 * N and all(len(c["images"]) == 1 for c in small.calls)
    # ... a realistic context_window on the guard keeps them together: one guarded call
    fixed = PixelLLM(window=3900)
    llm = guard(fixed, context_window=128_000)
    image_index.as_query_engine(llm=llm, multimodal=True, similarity_top_k=3).query("Describe.")
    assert len(fixed.calls) == N and all(len(c["images"]) == 2 for c in fixed.calls)


def test_guarded_query_engine_answers_about_the_query_image(image_index, tmp_path):
    query_image = tmp_path / "query.png"
    query_image.write_bytes(png_bytes(240))
    inner = PixelLLM(window=3900, which=-1)                          # small window: still one guarded call
    engine = GuardedQueryEngine.from_index(image_index, llm=inner, similarity_top_k=3, n_samples=N, seed=0)
    response = engine.query(QueryBundle("Is my photo bright?", image_path=str(query_image)))
    assert isinstance(response, Response) and response.response == BRIGHT
    assert len(inner.calls) == N
    for call in inner.calls:
        roles = [m.role.value for m in call["messages"]]
        assert roles == ["system", "user"] and len(call["images"]) == 3      # 2 retrieved + the query image
        assert call["forms"][-1] == "path"
        assert call["messages"][1].blocks[-1].text.endswith("Query: Is my photo bright?\nAnswer: ")
    meta = response.metadata["smoothguard"]
    assert json.dumps(meta) and meta["n_used"] == N and len(response.source_nodes) == 3
    assert query_image.read_bytes() == png_bytes(240)


def test_a_query_with_two_images_is_one_guarded_call(tmp_path):
    images = []
    for k, value in enumerate((20, 230)):
        images.append(tmp_path / f"q{k}.png")
        images[-1].write_bytes(png_bytes(value))
    data_url = "data:image/png;base64," + b64png(128)
    inner = PixelLLM(window=3900)
    engine = GuardedQueryEngine(guard(inner), system_prompt=None)
    response = engine.query(QueryBundle("Compare them.", image_path=[str(images[0]), str(images[1]), data_url]))
    assert len(inner.calls) == N and all(len(c["images"]) == 3 for c in inner.calls)
    assert all(c["forms"] == ["path", "path", "data_url"] for c in inner.calls)
    assert response.response == DARK and response.source_nodes == []


async def test_guarded_query_engine_async_and_streaming(image_index, tmp_path):
    query_image = tmp_path / "query.png"
    query_image.write_bytes(png_bytes(240))
    bundle = QueryBundle("Is my photo bright?", image_path=str(query_image))
    inner = PixelLLM(which=-1)
    engine = GuardedQueryEngine.from_index(image_index, llm=guard(inner), similarity_top_k=2)
    response = await engine.aquery(bundle)
    assert response.response == BRIGHT and len(inner.calls) == N
    streaming = GuardedQueryEngine.from_index(image_index, llm=guard(inner), streaming=True).query(bundle)
    assert isinstance(streaming, StreamingResponse) and streaming.metadata["smoothguard"]["n_used"] == N
    assert list(streaming.response_gen) == [BRIGHT]
    astreaming = await GuardedQueryEngine.from_index(image_index, llm=guard(inner), streaming=True).aquery(bundle)
    assert isinstance(astreaming, AsyncStreamingResponse)
    assert [t async for t in astreaming.async_response_gen()] == [BRIGHT]


def test_guarded_query_engine_settings_prompts_and_errors(tmp_path):
    llm = guard(PixelLLM())
    engine = GuardedQueryEngine(llm, n_samples=3)
    assert engine.llm.guard_config.n_samples == 3 and llm.guard_config.n_samples == N   # the caller's LLM kept
    assert GuardedQueryEngine(PixelLLM(), sigma=0.2).llm.guard_config.sigma == 0.2
    assert "qa_template" in engine.get_prompts()
    with pytest.raises(MediaError, match=r"query image 0: file not found"):
        engine.query(QueryBundle("?", image_path=str(tmp_path / "missing.png")))
    text_only = engine.query("Hello?")
    assert text_only.metadata["smoothguard"]["passthrough"] and text_only.response == "no image"
