"""``image_resize`` through every fan-out adapter, judged from what the wrapped model / upstream really received.

One request per case with a 2000x1500 JPEG (a mid-grey texture, quality 90), through:

* LangChain: ``ChatSmoothGuard`` (``invoke`` and ``ainvoke``), ``SmoothGuardRunnable`` after a prompt
  (``prompt | guard``) and around a whole chain (``guard(prompt | model)`` with ``media_keys``),
  ``SmoothGuardMiddleware`` in a ``create_agent`` agent;
* LlamaIndex: ``SmoothGuardLLM`` (``chat`` and ``achat``) and ``SmoothGuardMultiModalLLM.complete``;
* the proxy (``smoothguard serve``: ``create_app`` / the CLI's ``--image-resize``) in front of the recording
  OpenAI stub.

Checked for each: under ``"auto"`` every copy, the original included, arrives at the size the wrapped model sees
(OpenAI's rule for a generic model, Anthropic's for an ``*Anthropic*`` client class or a ``claude`` model,
Qwen2-VL's for a ``Qwen2.5-VL`` model name); the copies are all different, lossless PNG, and the metadata says
where the noise was drawn; ``"none"`` keeps the source size and says so in the notes; an explicit longest side or
(w, h) bound set through the adapter's own settings wins over "auto"; and the noise arrives at full strength
(``sigma * CLIP_STD`` per channel) at the model's size, while noise drawn at the source size and then resized by
the provider keeps much less (the reason the setting exists).
"""

from __future__ import annotations

import asyncio
import base64
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("langchain", "llamaindex", "serve"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from fakes.openai_server import OpenAIStub  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from lc_fakes import FakeVLM  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock  # noqa: E402
from llama_index.core.schema import ImageDocument  # noqa: E402
from llamaindex_fakes import LegacyPixelMM, PixelLLM  # noqa: E402
from serve_support import ProxyServer, image_message  # noqa: E402

from smoothguard import GuardConfig  # noqa: E402
from smoothguard.config import CLIP_STD  # noqa: E402
from smoothguard.image_resize import target_size  # noqa: E402
from smoothguard_langchain import ChatSmoothGuard, SmoothGuardMiddleware, SmoothGuardRunnable  # noqa: E402
from smoothguard_llamaindex import SmoothGuardLLM, SmoothGuardMultiModalLLM  # noqa: E402

N = 3
SIGMA = 0.1
SOURCE = (2000, 1500)
QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"
QUESTION = "What is in the picture?"
ANSWER = "A grey textured picture."  # every candidate answers the same: exact grouping, no embedder load
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIME = {"PNG": "image/png", "JPEG": "image/jpeg"}
EXPECTED_STD = SIGMA * np.array(CLIP_STD)  # per channel, in [0, 1] pixels (sigma in CLIP-normalised units)

#: "auto" flavours: the wrapped model's kind -> the rule "auto" must resolve to, and the size it gives 2000x1500
FLAVOURS = {"openai": ("openai", (1024, 768)), "anthropic": ("anthropic", (1238, 928)),
            "qwen": ("qwen2-vl", (1988, 1512))}
#: the proxy's request "model" per flavour (the proxy resolves "auto" from the model name alone)
PROXY_MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "qwen": QWEN}
EXPLICIT = {"longest-512": (512, (512, 384)), "bound-640x400": ((640, 400), (533, 400))}


# -- the image ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> bytes:
    return make_photo()


def make_photo() -> bytes:
    """A 2000x1500 mid-grey texture (levels ~0.26-0.58, so the noise is almost never clipped) as JPEG q90."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:SOURCE[1], 0:SOURCE[0]].astype(np.float32)
    base = 0.42 + 0.08 * np.sin(x / 23.0) * np.cos(y / 31.0) + 0.04 * np.sin((x + 2 * y) / 57.0)
    blocks = rng.uniform(-0.04, 0.04, (SOURCE[1] // 10, SOURCE[0] // 10, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(blocks, 10, axis=0), 10, axis=1)
    pixels = np.clip(np.rint((base[..., None] + texture) * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _pixels(raw: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as img:
        return np.asarray(img.convert("RGB"))


def _format(raw: bytes) -> str:
    with Image.open(io.BytesIO(raw)) as img:
        return str(img.format)


# -- what came back from one guarded request ----------------------------------------------------------------------


@dataclass
class Copy:
    raw: bytes  # the encoded image the model / upstream received
    mime: str | None  # the MIME type its carrier declared with it


@dataclass
class Outcome:
    copies: list[Copy]  # one per candidate, in arrival order
    meta: dict[str, Any]  # GuardResult.to_dict() as the adapter exposes it


def _data_url(url: str) -> Copy:
    head, _, data = url.partition(",")
    return Copy(base64.b64decode(data), head[5:].split(";")[0])


def _lc_images(messages: list[Any]) -> list[Copy]:
    """The image blocks of LangChain messages, whatever the dialect."""
    out = []
    for message in messages:
        content = message.content if isinstance(message.content, list) else []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image" and block.get("base64"):
                out.append(Copy(base64.b64decode(block["base64"]), block.get("mime_type")))
            elif block.get("type") == "image_url":
                url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
                out.append(_data_url(url))
    return out


def _lc_received(inner: FakeVLM) -> list[Copy]:
    copies = []
    for received in inner.inputs:
        messages = received.messages if hasattr(received, "messages") else received
        copies += _lc_images(list(messages))
    return copies


# -- the wrapped models: generic (OpenAI's rule), an Anthropic client class, a Qwen2.5-VL model name ---------------


def _answer(_messages: Any) -> str:
    return ANSWER


class FakeAnthropicVLM(FakeVLM):
    """FakeVLM under a class name containing "Anthropic" (as ``ChatAnthropic``)."""


def _lc_model(flavour: str) -> FakeVLM:
    if flavour == "anthropic":
        return FakeAnthropicVLM(answer_fn=_answer)
    if flavour == "qwen":
        return FakeVLM(answer_fn=_answer, model_name=QWEN)
    return FakeVLM(answer_fn=_answer)


class PixelAnthropicLLM(PixelLLM):
    """PixelLLM under a class name containing "Anthropic" (as LlamaIndex's ``Anthropic``)."""


class NamedPixelLLM(PixelLLM):
    """PixelLLM with a ``model`` field, as LlamaIndex's ``OpenAILike`` / ``Vllm`` / ``Ollama`` carry it."""

    model: str = QWEN
    name: str = QWEN


class LegacyAnthropicMM(LegacyPixelMM):
    """LegacyPixelMM under a class name containing "Anthropic" (as ``AnthropicMultiModal``)."""


class NamedLegacyMM(LegacyPixelMM):
    """LegacyPixelMM with a ``model`` field (as ``OpenAIMultiModal``)."""

    model: str = QWEN


def _li_model(flavour: str) -> PixelLLM:
    return {"openai": PixelLLM, "anthropic": PixelAnthropicLLM, "qwen": NamedPixelLLM}[flavour]()


def _li_mm_model(flavour: str) -> LegacyPixelMM:
    return {"openai": LegacyPixelMM, "anthropic": LegacyAnthropicMM, "qwen": NamedLegacyMM}[flavour]()


# -- one runner per adapter: (JPEG bytes, flavour, guard settings) -> what was received ----------------------------


def _settings(rule: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"n_samples": N, "seed": 0, "sigma": SIGMA}
    if rule is not None:
        out["image_resize"] = rule
    return out


def _v1_question(jpeg: bytes) -> list[HumanMessage]:
    block = {"type": "image", "base64": base64.b64encode(jpeg).decode("ascii"), "mime_type": "image/jpeg"}
    return [HumanMessage(content=[{"type": "text", "text": QUESTION}, block])]


def run_lc_chat(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    inner = _lc_model(flavour)
    reply = ChatSmoothGuard(model=inner, **_settings(rule)).invoke(_v1_question(jpeg))
    return Outcome(_lc_received(inner), reply.response_metadata["smoothguard"])


def run_lc_chat_async(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    inner = _lc_model(flavour)
    reply = asyncio.run(ChatSmoothGuard(model=inner, **_settings(rule)).ainvoke(_v1_question(jpeg)))
    return Outcome(_lc_received(inner), reply.response_metadata["smoothguard"])


def run_lc_runnable(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    """``prompt | SmoothGuardRunnable(bound=model)``: the guard sees the prompt's messages."""
    inner = _lc_model(flavour)
    prompt = ChatPromptTemplate.from_messages([
        ("user", [{"type": "text", "text": "{question}"},
                  {"type": "image_url", "image_url": "data:image/jpeg;base64,{image}"}]),
    ])
    chain = prompt | SmoothGuardRunnable(bound=inner, **_settings(rule))
    reply = chain.invoke({"question": QUESTION, "image": base64.b64encode(jpeg).decode("ascii")})
    return Outcome(_lc_received(inner), reply.response_metadata["smoothguard"])


def run_lc_runnable_chain(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    """``SmoothGuardRunnable(bound=prompt | model, media_keys=...)``: "auto" must find the model inside the chain."""
    inner = _lc_model(flavour)
    prompt = ChatPromptTemplate.from_messages([
        ("user", [{"type": "text", "text": "{question}"}, {"type": "image_url", "image_url": "{image}"}]),
    ])
    guard = SmoothGuardRunnable(bound=prompt | inner, media_keys={"image": "image"}, **_settings(rule))
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    reply = guard.invoke({"question": QUESTION, "image": url})
    return Outcome(_lc_received(inner), reply.response_metadata["smoothguard"])


def run_lc_middleware(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    inner = _lc_model(flavour)
    agent = create_agent(model=inner, tools=[], middleware=[SmoothGuardMiddleware(**_settings(rule))])
    state = agent.invoke({"messages": _v1_question(jpeg)})
    return Outcome(_lc_received(inner), state["messages"][-1].response_metadata["smoothguard"])


def run_li_llm(jpeg: bytes, flavour: str, rule: Any, *, use_async: bool = False) -> Outcome:
    inner = _li_model(flavour)
    message = ChatMessage(role=MessageRole.USER,
                          blocks=[TextBlock(text=QUESTION), ImageBlock(image=jpeg, image_mimetype="image/jpeg")])
    llm = SmoothGuardLLM(llm=inner, **_settings(rule))
    response = asyncio.run(llm.achat([message])) if use_async else llm.chat([message])
    copies = []
    for call in inner.calls:
        (block,) = call["blocks"]
        copies.append(Copy(block.resolve_image().read(), block.image_mimetype))
    return Outcome(copies, response.additional_kwargs["smoothguard"])


def run_li_llm_async(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    return run_li_llm(jpeg, flavour, rule, use_async=True)


def run_li_multimodal(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    inner = _li_mm_model(flavour)
    doc = ImageDocument(image=base64.b64encode(jpeg).decode("ascii"), image_mimetype="image/jpeg")
    response = SmoothGuardMultiModalLLM(llm=inner, **_settings(rule)).complete(QUESTION, image_documents=[doc])
    copies = []
    for docs in inner.received:
        (received,) = docs
        copies.append(Copy(base64.b64decode(received.image), received.image_mimetype))
    return Outcome(copies, response.additional_kwargs["smoothguard"])


def _proxy_app(upstream: str, rule: Any) -> Any:
    """Named rules and a longest side through ``smoothguard serve``'s own flags; a (w, h) bound through
    ``create_app(config=GuardConfig(...))``."""
    from smoothguard.serve import create_app

    if isinstance(rule, tuple) or rule is None:
        return create_app(upstream, GuardConfig(**_settings(rule)), warmup=False)
    import argparse

    from smoothguard.serve import cli

    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    args = parser.parse_args(["--upstream", upstream, "--n-samples", str(N), "--seed", "0", "--sigma", str(SIGMA),
                              "--no-warmup", "--image-resize", str(rule)])
    config, settings = cli.build_settings(args)
    return create_app(None, config, settings=settings)


def run_proxy(jpeg: bytes, flavour: str, rule: Any) -> Outcome:
    import httpx

    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    body = {"model": PROXY_MODELS[flavour], "messages": [image_message(url, QUESTION)]}
    with OpenAIStub(answer=lambda _body, _image: ANSWER) as stub, ProxyServer(_proxy_app(stub.base_url, rule)) as proxy:
        response = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
    copies = [_data_url(r.body["messages"][0]["content"][1]["image_url"]["url"]) for r in stub.requests]
    return Outcome(copies, response.json()["smoothguard"])


RUNNERS: dict[str, Callable[[bytes, str, Any], Outcome]] = {
    "lc_chat": run_lc_chat,
    "lc_chat_async": run_lc_chat_async,
    "lc_runnable": run_lc_runnable,
    "lc_runnable_chain": run_lc_runnable_chain,
    "lc_middleware": run_lc_middleware,
    "li_llm": run_li_llm,
    "li_llm_async": run_li_llm_async,
    "li_multimodal": run_li_multimodal,
    "proxy": run_proxy,
}
ADAPTERS = list(RUNNERS)


# -- checks ------------------------------------------------------------------------------------------------------


def _split(outcome: Outcome, is_original: Callable[[Copy, np.ndarray], bool]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the original's pixels, the noisy copies' pixels): exactly one copy must be the original."""
    pixels = [_pixels(c.raw) for c in outcome.copies]
    flags = [is_original(c, p) for c, p in zip(outcome.copies, pixels, strict=True)]
    assert sum(flags) == 1, f"{sum(flags)} of the {len(flags)} copies are the original (expected exactly 1)"
    original = next(p for p, f in zip(pixels, flags, strict=True) if f)
    return original, [p for p, f in zip(pixels, flags, strict=True) if not f]


def check_copies(outcome: Outcome, size: tuple[int, int], *, resized: bool, jpeg: bytes
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The N copies: all at ``size``, all different, noisy ones (and a resized original) PNG and declared so;
    the metadata's noise entry says where the noise was drawn. Returns (original, noisy) pixels."""
    assert len(outcome.copies) == N and outcome.meta["n_used"] == N
    sizes = [Image.open(io.BytesIO(c.raw)).size for c in outcome.copies]
    assert sizes == [size] * N, f"received sizes {sizes}, expected every copy at {size}"
    if resized:
        reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size, Image.Resampling.LANCZOS))

        def is_original(_copy: Copy, pixels: np.ndarray) -> bool:  # the noise moves a pixel ~5.5 levels on average
            return float(np.abs(pixels.astype(np.int16) - reference).mean()) < 1.0
    else:

        def is_original(copy: Copy, _pixels: np.ndarray) -> bool:
            return copy.raw == jpeg  # at the source size the caller's own bytes go out

    original, noisy = _split(outcome, is_original)
    assert len({p.tobytes() for p in [original, *noisy]}) == N, "the copies are not all different"
    for copy in outcome.copies:
        fmt = _format(copy.raw)
        assert copy.mime == MIME[fmt], f"a {fmt} copy was declared as {copy.mime!r}"
        if copy.raw != jpeg:  # noisy copies, and an original brought to the model's size: lossless
            assert copy.raw.startswith(PNG_MAGIC), f"a copy was sent as {fmt}, not PNG"
    source = {"width": SOURCE[0], "height": SOURCE[1]}
    assert outcome.meta["noise"] == [{"kind": "image", "source": source,
                                      "drawn_at": {"width": size[0], "height": size[1]}, "views": 1}]
    return original, noisy


def noise_std(original: np.ndarray, noisy: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (std, mean) of noisy - original over all noisy copies, in [0, 1] pixels."""
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for copy in noisy:
        diff = (copy.astype(np.int16) - original).reshape(-1, 3)
        for c in range(3):  # one contiguous channel at a time: ~10x faster than std(axis=0) on 9M values
            x = np.ascontiguousarray(diff[:, c], dtype=np.float32)
            total[c] += x.sum(dtype=np.float64)
            squares[c] += float(np.dot(x, x))
        count += diff.shape[0]
    mean = total / count
    return np.sqrt(squares / count - mean**2) / 255, mean / 255


def _downscaled(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What a provider does with an image larger than its input size: a Lanczos resize (8-bit)."""
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


# -- the tests ---------------------------------------------------------------------------------------------------


def test_expected_sizes_are_the_rules():
    for rule, size in FLAVOURS.values():
        assert target_size(rule, *SOURCE) == size
    for rule, size in EXPLICIT.values():
        assert target_size(rule, *SOURCE) == size


@pytest.mark.parametrize("flavour", list(FLAVOURS))
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_auto_draws_the_noise_at_the_wrapped_models_size(adapter, flavour, photo):
    _rule, size = FLAVOURS[flavour]
    outcome = RUNNERS[adapter](photo, flavour, None)
    original, noisy = check_copies(outcome, size, resized=True, jpeg=photo)
    assert not any("source size" in note for note in outcome.meta["notes"])
    if flavour == "openai":  # the noise arrives whole: sigma * CLIP std per channel, not averaged by a resize
        std, mean = noise_std(original, noisy)
        assert np.allclose(std, EXPECTED_STD, rtol=0.1), f"noise std {std}, expected {EXPECTED_STD}"
        assert np.all(np.abs(mean) < 0.002)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a not in ("lc_runnable_chain", "li_llm_async")])
def test_none_keeps_the_source_size_and_says_the_noise_is_weaker(adapter, photo):
    outcome = RUNNERS[adapter](photo, "openai", "none")
    original, noisy = check_copies(outcome, SOURCE, resized=False, jpeg=photo)
    assert any("source size" in note for note in outcome.meta["notes"]), outcome.meta["notes"]
    std, _mean = noise_std(original, noisy)
    assert np.allclose(std, EXPECTED_STD, rtol=0.1)  # full strength at 2000x1500 ...
    seen = FLAVOURS["openai"][1]
    small, _ = noise_std(_downscaled(original, seen), [_downscaled(n, seen) for n in noisy])
    assert np.all(small < 0.6 * EXPECTED_STD), f"after the provider's resize: {small} vs {EXPECTED_STD}"  # ... not


@pytest.mark.parametrize("setting", list(EXPLICIT))
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_explicit_size_set_on_the_adapter_wins_over_auto(adapter, setting, photo):
    rule, size = EXPLICIT[setting]
    outcome = RUNNERS[adapter](photo, "qwen", rule)  # the Qwen model would get 1988x1512 under "auto"
    check_copies(outcome, size, resized=True, jpeg=photo)
    expected = list(rule) if isinstance(rule, tuple) else rule
    assert outcome.meta["config"]["image_resize"] == expected
