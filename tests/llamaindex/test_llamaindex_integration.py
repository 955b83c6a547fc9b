"""SmoothGuardLLM inside LlamaIndex: spans and events, callbacks, remote media, tools, FunctionAgent, legacy LLMs."""

from __future__ import annotations

import base64
import copy
import http.server
import threading
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.schema import ImageDocument, ImageNode
from llama_index.core.tools import FunctionTool
from llamaindex_fakes import BENIGN, BRIGHT, DARK, HOSTILE, LegacyPixelMM, PixelLLM, png_bytes, triggered

from smoothguard.errors import ConfigError, MediaError
from smoothguard_llamaindex import SmoothGuardEvent, SmoothGuardLLM, SmoothGuardMultiModalLLM

root = get_dispatcher()


def user(*blocks: Any, text: str = "What is in the image?") -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=text), *blocks])]


class Events(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def instrumented():
    spans, events = SimpleSpanHandler(), Events()
    root.add_span_handler(spans)
    root.add_event_handler(events)
    yield spans, events
    root.span_handlers.remove(spans)
    root.event_handlers.remove(events)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_inner_calls_are_spans_under_the_guard_span(instrumented, mode):
    spans, events = instrumented
    guard = SmoothGuardLLM(llm=PixelLLM(), n_samples=4, seed=0)
    messages = user(ImageBlock(image=png_bytes(200)))
    response = guard.chat(messages) if mode == "sync" else await guard.achat(messages)
    name = "SmoothGuardLLM.chat" if mode == "sync" else "SmoothGuardLLM.achat"
    outer = [s for s in spans.completed_spans if s.id_.startswith(name + "-")]
    assert len(outer) == 1
    inner_name = "PixelLLM.chat-" if mode == "sync" else "PixelLLM.achat-"
    inner = [s for s in spans.completed_spans if s.id_.startswith(inner_name)]
    assert len(inner) == 4 and all(s.parent_id == outer[0].id_ for s in inner)
    votes = [e for e in events.events if isinstance(e, SmoothGuardEvent)]
    assert len(votes) == 1
    vote = votes[0]
    assert vote.span_id == outer[0].id_ and vote.class_name() == "SmoothGuardEvent"
    assert vote.n_samples == 4 and vote.agreement == 1.0 and vote.answer == BRIGHT and vote.model_name == "pixel-llm"
    assert vote.answers == [BRIGHT] * 4 and vote.result == response.additional_kwargs["smoothguard"]
    assert vote.model_dump()["class_name"] == "SmoothGuardEvent"


class Counter(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__([], [])
        self.llm_starts = 0
        self._lock = threading.Lock()

    def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
        if event_type == CBEventType.LLM:
            with self._lock:
                self.llm_starts += 1
        return event_id

    def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
        pass

    def start_trace(self, trace_id=None):
        pass

    def end_trace(self, trace_id=None, trace_map=None):
        pass


def test_callback_manager_reaches_the_inner_calls():
    counter = Counter()
    inner = PixelLLM()
    guard = SmoothGuardLLM(llm=inner, n_samples=3, seed=0)
    guard.callback_manager = CallbackManager([counter])      # what engines do to the LLM they hold
    guard.chat(user(ImageBlock(image=png_bytes(10))))
    # each model call once: the 3 candidates, no extra event for the guard's own call (issue 18 item 6)
    assert counter.llm_starts == 3 and inner.callback_manager is guard.callback_manager
    own = Counter()
    private = PixelLLM(callback_manager=CallbackManager([own]))
    guard = SmoothGuardLLM(llm=private, n_samples=3, seed=0, callback_manager=CallbackManager([Counter()]))
    guard.chat(user(ImageBlock(image=png_bytes(10))))
    assert own.llm_starts == 3 and private.callback_manager.handlers == [own]   # its own handlers are kept


@pytest.fixture
def server():
    routes = {"/dark.png": png_bytes(15), "/bright.jpg": png_bytes(235, fmt="JPEG")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_remote_media_policies(server):
    url = f"{server}/bright.jpg"
    inner = PixelLLM()
    response = SmoothGuardLLM(llm=inner, n_samples=4, seed=0, max_concurrency=1,
                              allow_private_fetch=True).chat(user(ImageBlock(url=url)))
    assert response.message.content == BRIGHT and len(inner.calls) == 4
    # every call inline and lossless, the original too: the model sees what the guard saw
    assert all(c["forms"] == ["bytes"] and c["mimes"] == ["image/png"] for c in inner.calls)
    notes = response.additional_kwargs["smoothguard"]["notes"]
    assert any("fetched" in n and "bright.jpg" in n for n in notes)

    inner = PixelLLM()
    response = SmoothGuardLLM(llm=inner, n_samples=4, remote_media="passthrough").chat(user(ImageBlock(url=url)))
    meta = response.additional_kwargs["smoothguard"]
    assert len(inner.calls) == 1 and meta["passthrough"]
    assert any("passed through unsmoothed" in n for n in meta["notes"])

    with pytest.raises(MediaError, match=r"blocks\[1\]: remote image .*remote_media='error'"):
        SmoothGuardLLM(llm=PixelLLM(), remote_media="error").chat(user(ImageBlock(url=url)))
    with pytest.raises(MediaError, match=r"blocks\[1\]: could not fetch .*missing.png.*404"):
        SmoothGuardLLM(llm=PixelLLM(), allow_private_fetch=True).chat(user(ImageBlock(url=f"{server}/missing.png")))


def test_noise_defeats_a_brittle_trigger():
    """A model backdoored by an exact +-2/255 pattern says HOSTILE on the original; the noisy copies break the
    pattern, so the guard answers BENIGN."""
    inner = PixelLLM(rule="trigger")
    image = ImageBlock(image=png_bytes(triggered()))
    assert inner.chat(user(image)).message.content == HOSTILE
    response = SmoothGuardLLM(llm=inner, n_samples=7, seed=0).chat(user(image))
    meta = response.additional_kwargs["smoothguard"]
    assert response.message.content == BENIGN and meta["samples"][0]["answer"] == HOSTILE
    assert meta["agreement"] == pytest.approx(6 / 7)


def tool_llm() -> MockFunctionCallingLLM:
    return MockFunctionCallingLLM(is_chat_model=True)


def lookup(species: str = "cat") -> str:
    """Look up facts about a species."""
    return f"{species}s purr"


def test_tool_calling_delegates_to_the_inner_model():
    guard = SmoothGuardLLM(llm=tool_llm(), n_samples=3, seed=0)
    assert guard.metadata.is_function_calling_model
    tool = FunctionTool.from_defaults(fn=lookup)
    image = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Which animal?"),
                                                        ImageBlock(image=png_bytes(100))])
    response = guard.chat_with_tools([tool], user_msg=image)
    calls = guard.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("lookup", {"species": "cat"})]
    assert response.additional_kwargs["smoothguard"]["n_used"] == 3
    assert "lookup" in response.additional_kwargs["smoothguard"]["answer"]          # voted on the tool call
    output = guard.predict_and_call([tool], user_msg=image)
    assert output.response == "cats purr"
    with pytest.raises(NotImplementedError, match="not a FunctionCallingLLM"):
        SmoothGuardLLM(llm=PixelLLM()).get_tool_calls_from_response(response)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the workflows package inspects pydantic members
async def test_function_agent_runs_on_the_guarded_llm():
    from llama_index.core.agent.workflow import FunctionAgent

    inner = tool_llm()
    guard = SmoothGuardLLM(llm=inner, n_samples=3, seed=0)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=guard)
    message = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What animal is this?"),
                                                          ImageBlock(image=png_bytes(100))])
    before = copy.deepcopy(message)
    result = await agent.run(user_msg=message)
    assert "Tool calls complete" in str(result)
    assert [t.tool_name for t in result.tool_calls] == ["lookup"]
    assert message == before


def test_wrapping_errors():
    with pytest.raises(ConfigError, match="SmoothGuardMultiModalLLM"):
        SmoothGuardLLM(llm=LegacyPixelMM())
    with pytest.raises(ConfigError, match="SmoothGuardLLM"):
        SmoothGuardMultiModalLLM(llm=PixelLLM())


async def test_legacy_multimodal_llm(tmp_path, instrumented):
    _, events = instrumented
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(220))
    docs = [ImageNode(image=base64.b64encode(png_bytes(20)).decode()), ImageDocument(image_path=str(path))]
    before = copy.deepcopy(docs)
    inner = LegacyPixelMM()
    guard = SmoothGuardMultiModalLLM(llm=inner, n_samples=5, seed=0, max_concurrency=1)
    response = guard.complete("What is it?", image_documents=docs)
    assert response.text == DARK and len(inner.received) == 5
    first = inner.received[0]
    assert first[0] is docs[0] and first[1] is docs[1]                   # the original first, unchanged
    for noisy in inner.received[1:]:
        assert isinstance(noisy[0], ImageNode) and noisy[0].image != docs[0].image          # base64 stays base64
        assert isinstance(noisy[1], ImageDocument) and noisy[1].image_path != docs[1].image_path  # path stays path
    assert docs == before
    assert response.additional_kwargs["smoothguard"]["n_used"] == 5
    assert guard.metadata.model_name == "smoothguard[legacy-mm]"
    assert [c.delta for c in guard.stream_complete("What?", image_documents=docs)] == [DARK]
    assert (await guard.acomplete("What?", image_documents=docs)).text == DARK
    assert [c.delta async for c in await guard.astream_complete("What?", image_documents=docs)] == [DARK]
    chat = guard.chat(user(ImageBlock(image=png_bytes(240))))
    assert chat.message.content == BRIGHT and chat.additional_kwargs["smoothguard"]["n_used"] == 5
    assert (await guard.achat(user(ImageBlock(image=png_bytes(240))))).message.content == BRIGHT
    votes = [e for e in events.events if isinstance(e, SmoothGuardEvent)]
    assert len(votes) == 6                                                # one per guarded call, not doubled
