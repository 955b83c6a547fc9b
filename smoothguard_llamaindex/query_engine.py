"""GuardedQueryEngine: queries that carry their own image(s), answered with retrieved context through the guard.

>>> engine = GuardedQueryEngine.from_index(index, llm=vision_llm, similarity_top_k=2, n_samples=11)
>>> response = engine.query(QueryBundle("What is on this label?", image_path="label.png"))
>>> response.response, response.metadata["smoothguard"]["agreement"]

For retrieval-only multimodal RAG (images come from the index, not the query), the stock engine with a
guarded LLM is enough: ``index.as_query_engine(llm=SmoothGuardLLM(llm=vision_llm), multimodal=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, TextBlock
from llama_index.core.base.response.schema import RESPONSE_TYPE, AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.llm import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from smoothguard import GuardConfig
from smoothguard.errors import MediaError
from smoothguard_llamaindex.guarded import METADATA_KEY, build_config
from smoothguard_llamaindex.llm import SmoothGuardLLM

__all__ = ["DEFAULT_QA_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "GuardedQueryEngine"]

DEFAULT_SYSTEM_PROMPT = (
    "You are an expert Q&A system that is trusted around the world.\n"
    "Answer the query using the provided context information and the image(s) attached to the query, "
    "and not prior knowledge."
)
DEFAULT_QA_TEMPLATE = (
    "Given the context information and the image(s) attached to the query, and not prior knowledge, "
    "answer the query.\nQuery: {query_str}\nAnswer: "
)


class GuardedQueryEngine(BaseQueryEngine):
    """A query engine whose queries may carry their own image(s): retrieved context (text and image nodes)
    plus the query's images go to the model in **one** user message, answered through the guard.

    Query images come from ``QueryBundle.image_path``: a path, an http(s) URL or a ``data:`` URL, or a list
    of them. Because the engine builds a single message itself, a query with several images is one guarded
    call (``n_samples`` inner calls, each with every image), whatever the model's ``context_window``.

    Args:
        llm: a :class:`SmoothGuardLLM`, or any ``LLM`` (wrapped with ``guard_config`` and ``settings``).
        retriever: where context comes from; None answers from the query (and its images) alone.
        guard_config / settings: :class:`~smoothguard.GuardConfig` and keyword settings, applied on top of
            a given ``SmoothGuardLLM``'s own.
        node_postprocessors: applied to the retrieved nodes, in order.
        system_prompt: the system message (None: none); qa_template: the last text block, with ``{query_str}``.
        streaming: ``query`` returns a ``StreamingResponse`` that yields the voted answer in one piece.

    The response's ``metadata["smoothguard"]`` is the call's ``GuardResult.to_dict()``.
    """

    def __init__(self, llm: LLM, retriever: BaseRetriever | None = None, *,
                 guard_config: GuardConfig | Mapping[str, Any] | None = None,
                 node_postprocessors: Sequence[BaseNodePostprocessor] | None = None,
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, qa_template: str = DEFAULT_QA_TEMPLATE,
                 streaming: bool = False, callback_manager: CallbackManager | None = None,
                 **settings: Any) -> None:
        if isinstance(llm, SmoothGuardLLM):
            if guard_config is not None or settings:
                base = guard_config if isinstance(guard_config, GuardConfig) else llm.guard_config
                extra = dict(guard_config) if isinstance(guard_config, Mapping) else {}
                llm = llm.model_copy(update={"guard_config": build_config(base, {**extra, **settings})})
        else:
            llm = SmoothGuardLLM(llm=llm, guard_config=guard_config, **settings)
        super().__init__(callback_manager=callback_manager)
        if callback_manager is not None:
            llm.callback_manager = callback_manager
        self._llm: SmoothGuardLLM = llm
        self._retriever = retriever
        self._postprocessors = list(node_postprocessors or [])
        self._system_prompt = system_prompt
        self._qa_template = PromptTemplate(qa_template)
        self._streaming = streaming

    @classmethod
    def from_index(cls, index: Any, llm: LLM, *, similarity_top_k: int = 2, **kwargs: Any) -> GuardedQueryEngine:
        """An engine retrieving ``similarity_top_k`` nodes from ``index`` (``index.as_retriever``)."""
        return cls(llm, index.as_retriever(similarity_top_k=similarity_top_k), **kwargs)

    @property
    def llm(self) -> SmoothGuardLLM:
        """The guarded LLM that answers every query."""
        return self._llm

    @property
    def retriever(self) -> BaseRetriever | None:
        return self._retriever

    # -- prompts --------------------------------------------------------------------------------------------

    def _get_prompts(self) -> dict[str, Any]:
        return {"qa_template": self._qa_template}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if "qa_template" in prompts:
            self._qa_template = prompts["qa_template"]  # type: ignore[assignment]

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    # -- retrieval and the message --------------------------------------------------------------------------

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The context nodes for ``query_bundle`` (retrieved, then post-processed); [] without a retriever."""
        if self._retriever is None:
            return []
        bundle = _retrieval_bundle(query_bundle)
        return self._postprocess(self._retriever.retrieve(bundle), bundle)

    async def aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        if self._retriever is None:
            return []
        bundle = _retrieval_bundle(query_bundle)
        return self._postprocess(await self._retriever.aretrieve(bundle), bundle)

    def _postprocess(self, nodes: list[NodeWithScore], bundle: QueryBundle) -> list[NodeWithScore]:
        for processor in self._postprocessors:
            nodes = processor.postprocess_nodes(nodes, query_bundle=bundle)
        return nodes

    def build_messages(self, query_bundle: QueryBundle, nodes: Sequence[NodeWithScore]) -> list[ChatMessage]:
        """What the model is asked: [system], then one user message with the context (text and image blocks of
        ``nodes``), the query's images and the filled ``qa_template``."""
        blocks: list[Any] = []
        if nodes:
            blocks.append(TextBlock(text="Context information is below.\n---------------------"))
            for n in nodes:
                blocks.extend(n.node.get_content_blocks(metadata_mode=MetadataMode.LLM))
            blocks.append(TextBlock(text="---------------------"))
        images = query_images(query_bundle)
        if images:
            blocks.append(TextBlock(text="Image(s) attached to the query:"))
            blocks.extend(images)
        blocks.append(TextBlock(text=self._qa_template.format(query_str=query_bundle.query_str)))
        messages = [ChatMessage(role=MessageRole.SYSTEM, content=self._system_prompt)] if self._system_prompt else []
        return [*messages, ChatMessage(role=MessageRole.USER, blocks=blocks)]

    # -- queries --------------------------------------------------------------------------------------------

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        nodes = self.retrieve(query_bundle)
        messages = self.build_messages(query_bundle, nodes)
        if self._streaming:
            stream = self._llm.stream_chat(messages)
            first = next(stream)
            return StreamingResponse(response_gen=_deltas(first, stream), source_nodes=nodes,
                                     metadata={METADATA_KEY: first.additional_kwargs.get(METADATA_KEY)})
        response = self._llm.chat(messages)
        return _response(response, nodes)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        nodes = await self.aretrieve(query_bundle)
        messages = self.build_messages(query_bundle, nodes)
        if self._streaming:
            stream = await self._llm.astream_chat(messages)
            first = await anext(stream)
            return AsyncStreamingResponse(response_gen=_adeltas(first, stream), source_nodes=nodes,
                                          metadata={METADATA_KEY: first.additional_kwargs.get(METADATA_KEY)})
        response = await self._llm.achat(messages)
        return _response(response, nodes)


def query_images(query_bundle: QueryBundle) -> list[ImageBlock]:
    """ImageBlocks for ``query_bundle.image_path``: a path, http(s) URL or ``data:`` URL, or a list of them."""
    sources = query_bundle.image_path
    if sources is None:
        return []
    if isinstance(sources, str | Path):
        sources = [sources]
    blocks = []
    for i, source in enumerate(sources):
        if not isinstance(source, str | Path) or not str(source).strip():
            raise MediaError(f"query image {i}: image_path items must be a path, an http(s) URL or a data: URL, "
                             f"got {type(source).__name__} {str(source)[:40]!r}")
        text = str(source)
        if text.split(":", 1)[0].lower() in ("http", "https", "data"):
            blocks.append(ImageBlock(url=text))
        elif not Path(text).is_file():
            raise MediaError(f"query image {i}: file not found: {text[:80]!r}")
        else:
            blocks.append(ImageBlock(path=Path(text)))
    return blocks


def _retrieval_bundle(query_bundle: QueryBundle) -> QueryBundle:
    """The bundle retrievers see: ``image_path`` reduced to the first image (retrievers take one)."""
    path = query_bundle.image_path
    if isinstance(path, list | tuple):
        path = str(path[0]) if path else None
    elif isinstance(path, Path):
        path = str(path)
    if path is query_bundle.image_path:
        return query_bundle
    return QueryBundle(query_str=query_bundle.query_str, image_path=path,
                       custom_embedding_strs=query_bundle.custom_embedding_strs, embedding=query_bundle.embedding)


def _response(response: ChatResponse, nodes: list[NodeWithScore]) -> Response:
    return Response(response=response.message.content or "", source_nodes=nodes,
                    metadata={METADATA_KEY: response.additional_kwargs.get(METADATA_KEY)})


def _deltas(first: ChatResponse, rest: Any) -> Any:
    yield first.delta or ""
    for chunk in rest:
        yield chunk.delta or ""


async def _adeltas(first: ChatResponse, rest: Any) -> Any:
    yield first.delta or ""
    async for chunk in rest:
        yield chunk.delta or ""
