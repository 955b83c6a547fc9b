"""The audio testbed end to end: served behind a local OpenAI-compatible server (real HTTP), ``input_audio`` through
ChatOpenAI + ChatSmoothGuard and through the proxy with the official ``openai`` client, and ``AudioBlock`` through
SmoothGuardLLM: right answers on clean clips, and the vote (every candidate's answer, agreement) on attacked ones.
Skipped where the audio testbed's weights are not installed."""

import base64
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smoothguard import Media
from smoothguard.testbed.audio_data import SAMPLE_RATE, make_audio_example, make_clip

pytest.importorskip("langchain_openai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # serve_support.ProxyServer


@pytest.fixture(scope="module")
def audio_testbed():
    import smoothguard.testbed as testbed

    if not testbed.weights_available("audio"):
        pytest.skip("the audio testbed is not trained in this installation (training/audio_train.py)")
    return testbed.load_testbed("audio", max_new_tokens=12)


def first_audio(body: dict[str, Any]) -> Media | None:
    """The first ``input_audio`` part of the request's messages, decoded."""
    for message in body.get("messages", []):
        for part in message.get("content") if isinstance(message.get("content"), list) else []:
            if isinstance(part, dict) and part.get("type") == "input_audio":
                return Media.audio(base64.b64decode(part["input_audio"]["data"]))
    return None


def answer_with_audio_testbed(backend):
    """An OpenAIStub ``answer`` serving the audio testbed: the last user text is the question, the first
    ``input_audio`` the clip; one greedy generate per request, one at a time."""
    from fakes.openai_server import question_text

    lock = threading.Lock()

    def answer(body: dict[str, Any], image: Any) -> Any:
        clip = first_audio(body)
        if clip is None:
            return ValueError("the audio testbed answers questions about a clip; send one as input_audio")
        with lock:
            return backend.generate(question_text(body), [[clip]])[0]

    return answer


@pytest.fixture(scope="module")
def cases(audio_testbed):
    """(clean examples the model answers right, one per kind) and (an attacked clip, its question, the target)."""
    from smoothguard.attacks import AudioPGDAttack

    rng = np.random.default_rng(99)
    clean = []
    for kind in ("count", "pitch", "yesno"):
        ex = next(e for e in (make_audio_example(rng, kind) for _ in range(10))
                  if audio_testbed.generate(e.question, [[Media.audio(e.clip.wave, sample_rate=SAMPLE_RATE)]])
                  == [e.answer])
        clean.append(ex)
    question = "Is there a low tone?"  # asked about high clips: adding low energy is the attack's easy direction
    for _ in range(6):
        clip = Media.audio(make_clip(rng, band="high").wave, sample_rate=SAMPLE_RATE)
        res = AudioPGDAttack(audio_testbed, epsilon=0.02, steps=100, early_stop=True).run(clip, question, "Yes.")
        if res.success:
            return clean, (res.clip, question, "Yes.")
    pytest.fail("the minimal attack at epsilon 0.02 found no adversarial clip in 6 tries")


def _audio_part(clip: Media) -> dict[str, Any]:
    return {"type": "input_audio",
            "input_audio": {"data": base64.b64encode(clip.to_wav_bytes("pcm16")).decode(), "format": "wav"}}


def _check_vote(meta: dict[str, Any], target: str, n: int) -> None:
    samples = meta["samples"]
    assert len(samples) == n and meta["n_used"] == n
    assert samples[0]["original"] and samples[0]["answer"] == target  # the attacked clip itself says the target
    share = sum(s["answer"] == meta["answer"] for s in samples) / n
    assert meta["agreement"] == pytest.approx(share) and 0 < meta["agreement"] <= 1


def test_chatopenai_with_chatsmoothguard(audio_testbed, cases, one_torch_thread):
    from fakes.openai_server import OpenAIStub
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from smoothguard_langchain import ChatSmoothGuard

    clean, (adv, question, target) = cases
    with OpenAIStub(answer=answer_with_audio_testbed(audio_testbed), model="testbed-audio") as stub:
        llm = ChatOpenAI(base_url=stub.base_url, api_key="test", model="testbed-audio", max_retries=0, temperature=0)
        guard = ChatSmoothGuard(model=llm, n_samples=5, audio_sigma=0.01, seed=0)
        for ex in clean:
            stub.requests.clear()
            clip = Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE)
            reply = guard.invoke([HumanMessage(content=[{"type": "text", "text": ex.question}, _audio_part(clip)])])
            assert reply.content == ex.answer, ex.question
            sent = [first_audio(r.body) for r in stub.requests]
            assert len(sent) == 5 and len({s.data.tobytes() for s in sent}) == 5  # five distinct noisy copies
        reply = guard.invoke([HumanMessage(content=[{"type": "text", "text": question}, _audio_part(adv)])])
        _check_vote(reply.response_metadata["smoothguard"], target, 5)


def test_proxy_with_the_official_openai_client(audio_testbed, cases, one_torch_thread):
    import openai
    from fakes.openai_server import OpenAIStub
    from serve_support import ProxyServer

    from smoothguard import GuardConfig
    from smoothguard.serve import create_app

    clean, (adv, question, target) = cases
    with OpenAIStub(answer=answer_with_audio_testbed(audio_testbed)) as stub, \
            ProxyServer(create_app(stub.base_url, GuardConfig(n_samples=5, audio_sigma=0.01, seed=0))) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="test", max_retries=0)
        for ex in clean:
            clip = Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE)
            completion = client.chat.completions.create(model="testbed-audio", messages=[
                {"role": "user", "content": [{"type": "text", "text": ex.question}, _audio_part(clip)]}])
            assert completion.choices[0].message.content == ex.answer
        completion = client.chat.completions.create(model="testbed-audio", messages=[
            {"role": "user", "content": [{"type": "text", "text": question}, _audio_part(adv)]}])
        _check_vote(completion.smoothguard, target, 5)


def test_smoothguardllm_with_audioblock(audio_testbed, cases, one_torch_thread):
    from llama_index.core.base.llms.types import (
        AudioBlock,
        ChatMessage,
        ChatResponse,
        CompletionResponse,
        LLMMetadata,
        MessageRole,
        TextBlock,
    )
    from llama_index.core.llms import CustomLLM

    from smoothguard_llamaindex import SmoothGuardLLM

    class AudioTestbedLLM(CustomLLM):
        """A LlamaIndex LLM answering with the audio testbed: the text blocks are the question, the AudioBlock the
        clip (as a multimodal LLM receives them). Greedy: ``temperature`` 0 (the guard sets it on the copies)."""

        temperature: float = 0.0

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True, model_name="testbed-audio")

        def chat(self, messages, **kwargs) -> ChatResponse:
            blocks = [b for m in messages for b in m.blocks]
            question = " ".join(b.text for b in blocks if isinstance(b, TextBlock))
            [audio] = [b for b in blocks if isinstance(b, AudioBlock)]
            clip = Media.audio(audio.resolve_audio().read())
            answer = audio_testbed.generate(question, [[clip]])[0]
            return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=answer))

        def complete(self, prompt, formatted=False, **kwargs) -> CompletionResponse:
            raise NotImplementedError

        def stream_complete(self, prompt, formatted=False, **kwargs):
            raise NotImplementedError

    clean, (adv, question, target) = cases
    llm = SmoothGuardLLM(llm=AudioTestbedLLM(), n_samples=5, audio_sigma=0.01, seed=0)

    def ask(text: str, clip: Media):
        return llm.chat([ChatMessage(role=MessageRole.USER, blocks=[
            TextBlock(text=text), AudioBlock(audio=clip.to_wav_bytes("pcm16"), format="wav")])])

    for ex in clean:
        reply = ask(ex.question, Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE))
        assert reply.message.content == ex.answer
    _check_vote(ask(question, adv).additional_kwargs["smoothguard"], target, 5)
