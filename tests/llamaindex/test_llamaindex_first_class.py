"""SmoothGuardLLM as a drop-in where LlamaIndex users put an LLM (issue 18): FunctionAgent, ReActAgent,
CondenseQuestionChatEngine, the token counter; and the shared base of both LlamaIndex guards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.tools import FunctionTool
from llamaindex_fakes import BRIGHT, LegacyPixelMM, PixelLLM, png_bytes

from smoothguard_llamaindex import SmoothGuardEvent, SmoothGuardLLM, SmoothGuardMultiModalLLM
from smoothguard_llamaindex.base import GuardedLLMBase

N = 3
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the workflows package inspects pydantic members


class Votes(BaseEventHandler):
    """Collects every SmoothGuardEvent dispatched while it is attached."""

    events: list[SmoothGuardEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Votes"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, SmoothGuardEvent):
            self.events.append(event)


@pytest.fixture
def votes():
    handler = Votes(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def image_message(text: str, level: int = 220) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=text), ImageBlock(image=png_bytes(level))])


def lookup(species: str = "cat") -> str:
    """Look up facts about a species."""
    return f"{species}s purr"


class ReActScript(CustomLLM):
    """A chat model that speaks ReAct: first it calls ``lookup``, then, once it has seen the observation, answers
    with the fact it looked up; ``images_seen`` records how many images each call carried."""

    images_seen: list[int] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, context_window=128_000, model_name="react-script")

    def _reply(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        self.images_seen.append(sum(isinstance(b, ImageBlock) for m in messages for b in m.blocks))
        history = "\n".join(m.content or "" for m in messages[1:])  # [0] is the system prompt explaining ReAct
        if "cats purr" in history:  # the observation of the lookup
            text = "Thought: I can answer without using any more tools.\nAnswer: A cat; cats purr."
        else:
            text = 'Thought: I need to look this up.\nAction: lookup\nAction Input: {"species": "cat"}'
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._reply([ChatMessage(content=prompt)]).message.content or "")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


async def test_function_agent_guards_each_step_with_an_image(votes):
    from llama_index.core.agent.workflow import FunctionAgent

    inner = MockFunctionCallingLLM(is_chat_model=True)
    guard = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=guard)

    result = await agent.run(user_msg=image_message("Which animal is this?"))

    assert [(c.tool_name, c.tool_output.raw_output) for c in result.tool_calls] == [("lookup", "cats purr")]
    guarded = [e for e in votes.events if not e.passthrough]
    assert guarded and all(e.n_samples == N for e in guarded)  # every step that saw the image was voted on


async def test_react_agent_on_a_scripted_react_model(votes):
    from llama_index.core.agent.workflow import ReActAgent

    inner = ReActScript(images_seen=[])
    guard = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)
    agent = ReActAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=guard)

    result = await agent.run(user_msg=image_message("Which animal is this?"))

    assert "A cat; cats purr." in str(result)
    assert len(inner.images_seen) == 2 * N and all(n == 1 for n in inner.images_seen)  # two steps, N copies each
    assert [e.n_samples for e in votes.events] == [N, N] and all(e.agreement == 1.0 for e in votes.events)


def test_condense_question_chat_engine_over_multimodal_retrieval(votes):
    import base64

    from llama_index.core import VectorStoreIndex
    from llama_index.core.chat_engine import CondenseQuestionChatEngine
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import ImageNode

    inner = PixelLLM()
    guard = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)
    node = ImageNode(image=base64.b64encode(png_bytes(230)).decode(), text="a photo")
    index = VectorStoreIndex([node], embed_model=MockEmbedding(embed_dim=8))
    engine = RetrieverQueryEngine.from_args(index.as_retriever(similarity_top_k=1), llm=guard, multimodal=True)
    chat = CondenseQuestionChatEngine.from_defaults(query_engine=engine, llm=guard)

    first = chat.chat("How bright is the photo?")
    second = chat.chat("And is it dark?")

    assert str(first) == BRIGHT and str(second) == BRIGHT
    guarded = [e for e in votes.events if not e.passthrough]
    assert [e.n_samples for e in guarded] == [N, N]  # each answer over the retrieved image was voted on
    assert len(chat.chat_history) == 4


def test_token_counter_sees_each_model_call_once():
    counter = TokenCountingHandler(tokenizer=lambda text: text.split())
    inner = PixelLLM()
    guard = SmoothGuardLLM(llm=inner, n_samples=11, seed=0)
    guard.callback_manager = CallbackManager([counter])  # as an engine does with the LLM it holds

    guard.chat([image_message("How bright is it?")])
    assert len(counter.llm_token_counts) == 11 == len(inner.calls)
    guard.chat([ChatMessage(role=MessageRole.USER, content="Say hello.")])  # no media: one call, counted once
    assert len(counter.llm_token_counts) == 12


def test_both_guards_share_one_base_and_warm_up():
    from smoothguard.aggregate.embed import get_embedder

    text = SmoothGuardLLM(llm=PixelLLM(), n_samples=N, sigma=0.2)
    legacy = SmoothGuardMultiModalLLM(llm=LegacyPixelMM(), n_samples=N, sigma=0.2)
    assert isinstance(text, GuardedLLMBase) and isinstance(legacy, GuardedLLMBase)
    assert text.guard_config == legacy.guard_config and text.guard is legacy.guard
    assert text.warmup() is text and legacy.warmup() is legacy
    assert get_embedder(text.guard_config.embedder, text.guard_config.embedder_device)._model is not None
    from smoothguard.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sigmaa.*sigma"):
        SmoothGuardMultiModalLLM(llm=LegacyPixelMM(), sigmaa=0.2)
    with pytest.raises(ConfigError, match="wraps a llama_index MultiModalLLM"):
        SmoothGuardMultiModalLLM(llm=PixelLLM())
