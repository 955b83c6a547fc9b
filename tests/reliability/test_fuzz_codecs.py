"""Property tests (hypothesis) of the content-block codecs: LangChain, LlamaIndex and, as a bonus, the proxy's.

Random messages: every dialect of media block with valid, broken or wrongly typed payloads, unknown block types,
random nesting (JSON values, blocks inside blocks), mixed text and media, and huge text. Asserted: nothing raises
but our own error (``MediaError``; the proxy's ``ProxyError``), the caller's input is untouched, every non-media
part of a rebuilt payload is the caller's very object, and the rebuilt media blocks read back as the variant.

Marked ``fuzz``. ``SMOOTHGUARD_FUZZ_EXAMPLES`` sets the examples per codec test (default 200; the CI-sized run is
``SMOOTHGUARD_FUZZ_EXAMPLES=10000 pytest -m fuzz tests/reliability``); the end-to-end tests through
ChatSmoothGuard / SmoothGuardLLM run a tenth of that.
"""

from __future__ import annotations

import base64
import copy
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    AudioBlock,
    CacheControl,
    CachePoint,
    ChatMessage,
    CitableBlock,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from PIL import Image
from pydantic import ValidationError
from reliability_support import MediaLLM

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import MediaError, SmoothGuardError

EXAMPLES = int(os.environ.get("SMOOTHGUARD_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
E2E = settings(FUZZ, max_examples=max(20, EXAMPLES // 10))
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")]

_RNG = np.random.default_rng(0)
PNG = Media.image(_RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).to_png_bytes()
JPEG = Media.image(_RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).to_bytes("jpeg")
_GIF = io.BytesIO()
Image.fromarray(_RNG.integers(0, 256, (4, 7, 3), dtype=np.uint8)).convert("P").save(_GIF, "GIF")
GIF = _GIF.getvalue()
WAV = Media.audio((0.2 * np.sin(np.arange(400) / 5)).astype(np.float32), sample_rate=8000).to_wav_bytes()
FILES = Path(tempfile.gettempdir()) / f"sg-fuzz-{os.getpid()}"  # written by the fixture below, then removed


@pytest.fixture(scope="module", autouse=True)
def _files(figures):
    FILES.mkdir(exist_ok=True)
    for name, raw in {"a.png": PNG, "b.jpg": JPEG, "c.wav": WAV, "bad.png": b"not a png", "empty.png": b""}.items():
        (FILES / name).write_bytes(raw)
    figures(f"fuzz: {EXAMPLES} examples per codec test (LangChain, LlamaIndex, proxy), {max(20, EXAMPLES // 10)} per "
            "end-to-end test (SMOOTHGUARD_FUZZ_EXAMPLES)")
    yield
    shutil.rmtree(FILES, ignore_errors=True)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# -- strategies shared by the codecs ----------------------------------------------------------------------------

raw_media = st.sampled_from([PNG, JPEG, GIF, WAV, b"", b"garbage", PNG[:30], WAV[:44]]) | st.binary(max_size=48)
garbage_text = st.text(max_size=24)
b64_text = raw_media.map(_b64) | garbage_text | raw_media.map(lambda r: base64.urlsafe_b64encode(r).decode())
mimes = st.sampled_from(["image/png", "image/jpeg", "image/gif", "audio/wav", "audio/mpeg", "text/plain", ""])
data_urls = st.builds(lambda mime, payload: f"data:{mime};base64,{payload}", mimes, b64_text)
urls = data_urls | st.sampled_from(["https://example.invalid/cat.png", "http://10.0.0.1/a.wav", "ftp://host/x.png",
                                    "file:///etc/passwd", "", "data:", "data:image/png,abc", "javascript:alert(1)",
                                    "HTTPS://EXAMPLE.INVALID/X.PNG"]) | garbage_text
weird = (st.none() | st.integers() | st.floats(allow_nan=True) | st.booleans() | st.binary(max_size=8)
         | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
huge_text = st.sampled_from([10_000, 200_000, 1_000_000]).map(lambda n: "A huge text. " * (n // 13))
texts = st.text(max_size=40) | huge_text


def _with_extras(block: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    """``block`` with a few random extra keys (the block's own keys win)."""
    extras = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.tuples(block, extras).map(lambda pair: {**pair[1], **pair[0]})


# -- LangChain ------------------------------------------------------------------------------------------------

kinds = st.sampled_from(["image", "audio"])
lc_media_blocks = st.one_of(
    st.fixed_dictionaries({"type": kinds}, optional={"base64": b64_text | weird, "mime_type": mimes | weird,
                                                     "url": urls | weird, "file_id": garbage_text}),
    st.fixed_dictionaries({"type": kinds, "source_type": st.sampled_from(["base64", "url", "id", "file", "?"])},
                          optional={"data": b64_text | weird, "url": urls | weird, "id": garbage_text,
                                    "mime_type": mimes}),
    st.fixed_dictionaries({"type": kinds, "source": st.fixed_dictionaries(
        {"type": st.sampled_from(["base64", "url", "file", "text", "?"]) | weird},
        optional={"data": b64_text | weird, "url": urls | weird, "file_id": garbage_text, "media_type": mimes})}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {}, optional={"url": urls | weird, "detail": st.sampled_from(["low", "high", "auto"])}) | urls | weird}),
    st.fixed_dictionaries({"type": st.just("input_audio"), "input_audio": st.fixed_dictionaries(
        {}, optional={"data": b64_text | weird, "format": st.sampled_from(["wav", "WAV", "mp3", "flac"]) | weird})
        | weird}),
)
lc_valid_media = st.one_of(
    st.builds(lambda r: {"type": "image", "base64": _b64(r), "mime_type": "image/png"}, st.sampled_from([PNG, JPEG])),
    st.just({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(PNG)}", "detail": "low"}}),
    st.just({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": _b64(JPEG)}}),
    st.just({"type": "image", "source_type": "base64", "data": _b64(PNG), "mime_type": "image/png"}),
    st.just({"type": "input_audio", "input_audio": {"data": _b64(WAV), "format": "wav"}}),
    st.just({"type": "audio", "url": f"data:audio/wav;base64,{_b64(WAV)}"}),
)
lc_other_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),  # no or any "type"
    st.builds(lambda t, rest: {**rest, "type": t}, st.text(max_size=12), st.dictionaries(st.text(max_size=6),
                                                                                         json_values, max_size=3)),
    st.sampled_from([{"type": "video", "url": "https://x.invalid/v.mp4"}, {"type": "file", "file_id": "f1"},
                     {"type": "thinking", "thinking": "hmm"}, {"type": "reasoning"}]),
)
lc_blocks = st.recursive(
    _with_extras(lc_media_blocks) | lc_valid_media | lc_other_blocks,
    lambda inner: st.builds(lambda t, content: {"type": t, "tool_use_id": "t1", "content": content},
                            st.sampled_from(["tool_result", "search_result", "x"]), st.lists(inner, max_size=3)),
    max_leaves=6)
lc_content = st.text(max_size=30) | st.lists(lc_blocks | st.text(max_size=10), max_size=5)
lc_any_content = lc_content | weird | st.lists(lc_blocks | weird, max_size=4)
roles = st.sampled_from(["user", "assistant", "system", "tool", "human", "ai", "developer", "?"])
lc_base_messages = st.one_of(
    st.builds(HumanMessage, content=lc_content), st.builds(AIMessage, content=lc_content),
    st.builds(SystemMessage, content=lc_content),
    st.builds(lambda c: ToolMessage(content=c, tool_call_id="call_1"), lc_content))
lc_messages = st.lists(
    lc_base_messages | st.fixed_dictionaries({"role": roles, "content": lc_any_content}, optional={"name": texts})
    | st.tuples(roles, lc_any_content), min_size=1, max_size=4)
lc_configs = st.builds(lambda remote, size: GuardConfig(remote_media=remote, max_media_bytes=size, n_samples=2, seed=0),
                       st.sampled_from(["error", "passthrough"]), st.sampled_from([50 * 2**20, 2000]))


def _lc_content(message: Any) -> Any:
    if isinstance(message, dict):
        return message.get("content")
    if isinstance(message, tuple):
        return message[1]
    return message.content


def _lc_rest(message: Any) -> Any:
    """Everything of a message but its content."""
    if isinstance(message, dict):
        return {k: v for k, v in message.items() if k != "content"}
    if isinstance(message, tuple):
        return message[0]
    return message.model_dump(exclude={"content"})


@FUZZ
@given(messages=lc_messages, config=lc_configs)
def test_langchain_codec(messages: list, config: GuardConfig) -> None:
    from smoothguard_langchain.blocks import find_media

    snapshot = copy.deepcopy(messages)
    contents = [_lc_content(m) for m in messages]
    try:
        found = find_media(messages, config)
    except MediaError:
        found = None
    assert messages == snapshot and all(_lc_content(m) is c for m, c in zip(messages, contents, strict=True))
    if found is None:
        return
    assert all(found.messages[i] is m for i, m in enumerate(messages))
    variant = SmoothGuard(config).perturb(found.media, n=2)[1] if found.media else []
    rebuilt = found.rebuild(variant)
    assert messages == snapshot  # rebuilding changes nothing of the caller's
    places = {(s.message, s.block): s for s in found.slots}
    for i, (old, new) in enumerate(zip(messages, rebuilt, strict=True)):
        if not any(s.message == i for s in found.slots):
            assert new is old
            continue
        assert type(new) is type(old) and _lc_rest(new) == _lc_rest(old)
        old_blocks, new_blocks = _lc_content(old), _lc_content(new)
        assert len(new_blocks) == len(old_blocks)
        for j, (a, b) in enumerate(zip(old_blocks, new_blocks, strict=True)):
            if (i, j) in places:
                assert b is not a and b["type"] == a["type"]  # same dialect, new block
                if places[(i, j)].path:  # a container: only its nested content changed
                    assert {k: v for k, v in b.items() if k != "content"} == \
                        {k: v for k, v in a.items() if k != "content"}
            else:
                assert b is a  # non-media parts: the caller's very objects
    again = find_media(rebuilt, config)
    assert [(s.message, s.block, s.path, s.kind, s.dialect) for s in again.slots] == \
        [(s.message, s.block, s.path, s.kind, s.dialect) for s in found.slots]
    for read, sent in zip(again.media, variant, strict=True):
        assert read.kind == sent.kind and read.data.shape == sent.data.shape
        if sent.kind == "image" and sent.format == "png":
            assert np.abs(read.data - sent.data).max() <= 0.5 / 255 + 1e-6
    same = found.rebuild(found.media)
    assert all(a is b for a, b in zip(same, messages, strict=True))


class _ConstChat(BaseChatModel):
    """Answers the same sentence to anything (never reads the blocks)."""

    @property
    def _llm_type(self) -> str:
        return "const"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="A fine picture."))])


@E2E
@given(messages=st.lists(lc_base_messages, min_size=1, max_size=3), config=lc_configs)
def test_chat_smoothguard_end_to_end(messages: list, config: GuardConfig) -> None:
    """The whole ChatSmoothGuard call (langchain-core's own input handling included) raises only our errors."""
    from smoothguard_langchain import ChatSmoothGuard

    guard = ChatSmoothGuard(model=_ConstChat(), **{k: v for k, v in config.to_dict().items()
                                                   if k in ("remote_media", "max_media_bytes", "n_samples", "seed")})
    snapshot = copy.deepcopy(messages)
    try:
        reply = guard.invoke(messages)
    except SmoothGuardError:
        reply = None
    assert messages == snapshot
    if reply is not None:
        assert reply.content == "A fine picture." and "smoothguard" in reply.response_metadata


# -- LlamaIndex -----------------------------------------------------------------------------------------------

paths = st.sampled_from(["a.png", "b.jpg", "c.wav", "bad.png", "empty.png"]).map(lambda n: FILES / n)


@st.composite
def li_media_blocks(draw: Any) -> ImageBlock | AudioBlock:
    cls = draw(st.sampled_from([ImageBlock, AudioBlock]))
    field = "image" if cls is ImageBlock else "audio"
    form = draw(st.sampled_from(["bytes", "b64", "io", "url", "path", "empty"]))
    raw = draw(raw_media)
    kwargs: dict[str, Any] = {}
    if form == "bytes":
        kwargs[field] = raw
    elif form == "b64":
        kwargs[field] = base64.b64encode(raw)
    elif form == "io":
        stream = io.BytesIO(raw)
        stream.seek(draw(st.integers(0, len(raw))))
        kwargs[field] = stream
    elif form == "url":
        kwargs["url"] = draw(urls)
    elif form == "path":
        kwargs["path"] = draw(paths)
    if cls is ImageBlock and draw(st.booleans()):
        kwargs["image_mimetype"] = draw(mimes)
    try:
        return cls(**kwargs)
    except (ValidationError, ValueError, TypeError):
        reject()


li_valid_media = st.sampled_from([lambda: ImageBlock(image=PNG), lambda: ImageBlock(image=JPEG),
                                  lambda: ImageBlock(path=FILES / "a.png"), lambda: AudioBlock(audio=WAV),
                                  lambda: ImageBlock(url=f"data:image/png;base64,{_b64(PNG)}"),
                                  lambda: ImageBlock(image=io.BytesIO(PNG))]).map(lambda make: make())
li_other_blocks = st.one_of(
    st.builds(TextBlock, text=texts),
    st.builds(ThinkingBlock, content=st.text(max_size=20) | st.none()),
    st.builds(ToolCallBlock, tool_name=st.text(max_size=10), tool_kwargs=st.dictionaries(st.text(max_size=6),
                                                                                         json_values, max_size=3)),
    st.builds(lambda: CachePoint(cache_control=CacheControl(type="ephemeral"))),
    st.builds(lambda raw: DocumentBlock(data=raw, document_mimetype="application/pdf"), st.binary(min_size=1,
                                                                                                 max_size=16)),
)
li_blocks = li_media_blocks() | li_valid_media | li_other_blocks
li_citable = st.builds(lambda content, title: CitableBlock(content=content, title=title, source="s"),
                       st.lists(st.builds(TextBlock, text=st.text(max_size=10))
                                | li_valid_media.filter(lambda b: isinstance(b, ImageBlock)), max_size=3),
                       st.text(max_size=8))
li_messages = st.lists(
    st.builds(lambda role, blocks, extra: ChatMessage(role=role, blocks=blocks, additional_kwargs=extra),
              st.sampled_from(list(MessageRole)), st.lists(li_blocks | li_citable, max_size=4),
              st.dictionaries(st.text(max_size=8).filter(lambda k: k != "images"), json_values, max_size=3)),
    min_size=1, max_size=3)
li_configs = st.builds(lambda remote, size: GuardConfig(remote_media=remote, max_media_bytes=size, n_samples=2, seed=0),
                       st.sampled_from(["error", "passthrough"]), st.sampled_from([50 * 2**20, 2000]))


def _form(block: Any) -> str:
    data = block.image if isinstance(block, ImageBlock) else block.audio
    if isinstance(data, io.IOBase):
        return "io"
    if data:
        return "bytes"
    if block.path is not None:
        return "path"
    return "data_url" if str(block.url).startswith("data:") else "url"


def _streams(messages: list[ChatMessage]) -> list[tuple[Any, int]]:
    out = []
    for m in messages:
        for b in m.blocks:
            data = getattr(b, "image", None) or getattr(b, "audio", None)
            if isinstance(data, io.IOBase):
                out.append((data, data.tell()))
    return out


@FUZZ
@given(messages=li_messages, config=li_configs)
def test_llamaindex_codec(messages: list[ChatMessage], config: GuardConfig) -> None:
    from smoothguard_llamaindex.blocks import MessageMedia

    snapshot = [m.model_dump() for m in messages]
    blocks = [list(m.blocks) for m in messages]
    streams = _streams(messages)
    try:
        payload = MessageMedia(messages, config)
    except MediaError:
        payload = None

    def untouched() -> None:
        assert [m.model_dump() for m in messages] == snapshot
        assert all(all(a is b for a, b in zip(m.blocks, old, strict=True)) for m, old in zip(messages, blocks,
                                                                                            strict=True))
        assert all(stream.tell() == at for stream, at in streams)

    untouched()
    if payload is None:
        return
    with payload:
        variant = SmoothGuard(config).perturb(payload.media, n=2)[1] if payload.media else []
        built = payload.build(variant, tag=1)
        untouched()
        for old, new in zip(messages, built, strict=True):
            assert new is not old and new.role == old.role and len(new.blocks) == len(old.blocks)
            assert new.additional_kwargs == {k: v for k, v in old.additional_kwargs.items() if k != "images"}
            for a, b in zip(old.blocks, new.blocks, strict=True):
                if isinstance(a, ImageBlock | AudioBlock) and b is not a:
                    assert type(b) is type(a) and _form(b) in (_form(a), "bytes")
                elif isinstance(a, CitableBlock) and b is not a:  # nested images replaced, the rest kept
                    assert (b.title, b.source, len(b.content)) == (a.title, a.source, len(a.content))
                    assert all(y is x or isinstance(x, ImageBlock) for x, y in zip(a.content, b.content, strict=True))
                else:
                    assert b is a  # non-media parts: the caller's very objects
        again = MessageMedia(built, config)
        with again:
            assert len(again.media) == len(variant)
            for read, sent in zip(again.media, variant, strict=True):
                assert read.kind == sent.kind and read.data.shape == sent.data.shape
        originals = payload.build(payload.media, tag=0)
        for old, new in zip(messages, originals, strict=True):
            for a, b in zip(old.blocks, new.blocks, strict=True):
                if isinstance(a, CitableBlock):
                    assert all(y is x or _form(x) == "io" for x, y in zip(a.content, b.content, strict=True))
                else:
                    assert b is a or _form(a) == "io"  # a file-like original gets its own stream
        tmp = payload._reader._tmp
    assert tmp is None or not tmp.exists()  # path-form copies are deleted on close
    untouched()


@E2E
@given(messages=li_messages, config=li_configs)
def test_smoothguard_llm_end_to_end(messages: list[ChatMessage], config: GuardConfig) -> None:
    """The whole SmoothGuardLLM.chat call raises only our errors and leaves the messages as they were."""
    from smoothguard_llamaindex import SmoothGuardLLM

    llm = SmoothGuardLLM(llm=MediaLLM(script=lambda n, m: "A fine picture."), guard_config=config)
    snapshot = [m.model_dump() for m in messages]
    try:
        reply = llm.chat(messages)
    except SmoothGuardError:
        reply = None
    assert [m.model_dump() for m in messages] == snapshot
    if reply is not None:
        assert reply.message.content == "A fine picture."


# -- the proxy's codec (bonus) --------------------------------------------------------------------------------

oa_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {}, optional={"url": urls | weird, "detail": st.sampled_from(["low", "high"])}) | urls | weird}),
    st.fixed_dictionaries({"type": st.just("input_audio"), "input_audio": st.fixed_dictionaries(
        {}, optional={"data": b64_text | weird, "format": st.sampled_from(["wav", "mp3"]) | weird}) | weird}),
    st.fixed_dictionaries({"type": st.just("audio_url"), "audio_url": st.fixed_dictionaries(
        {}, optional={"url": urls | weird}) | weird}),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}},
              st.sampled_from([f"data:image/png;base64,{_b64(PNG)}", f"data:image/jpeg;base64,{_b64(JPEG)}"])),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)
oa_bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=8), "messages": st.lists(
        st.fixed_dictionaries({"role": roles, "content": st.text(max_size=20) | st.lists(oa_blocks, max_size=4)
                               | weird}) | weird, max_size=4) | weird},
    optional={"temperature": json_values, "stream": st.booleans(), "extra": json_values})


@FUZZ
@given(body=oa_bodies)
def test_proxy_codec(body: dict) -> None:
    from smoothguard.serve.codec import candidate_body, decode_slot, find_media
    from smoothguard.serve.errors import ProxyError

    config = GuardConfig(n_samples=2, seed=0)
    snapshot = copy.deepcopy(body)
    try:
        slots = find_media(body)
    except ProxyError as exc:
        assert 400 <= exc.status < 500
        slots = None
    assert body == snapshot
    if not slots:
        return
    inline = []
    for slot in slots:
        if slot.source != "data":
            continue
        try:
            inline.append((slot, decode_slot(slot, config)))
        except MediaError:
            continue
    assert body == snapshot
    if not inline:
        return
    chosen = [s for s, _ in inline]
    originals = [m for _, m in inline]
    variant = SmoothGuard(config).perturb(originals, n=2)[1]
    out = candidate_body(body, chosen, originals, variant, set_fields={"stream": False}, drop_fields=("extra",))
    assert body == snapshot
    places = {(s.message, s.block) for s in chosen}
    for key, value in body.items():
        if key not in ("messages", "stream", "extra"):
            assert out[key] is value
    for i, (old, new) in enumerate(zip(body["messages"], out["messages"], strict=True)):
        if not any(m == i for m, _ in places):
            assert new is old
            continue
        for j, (a, b) in enumerate(zip(old["content"], new["content"], strict=True)):
            assert (b is not a and b["type"] == a["type"]) if (i, j) in places else b is a
