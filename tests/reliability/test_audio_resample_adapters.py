"""``audio_resample`` through the fan-out adapters and the proxy, judged from what the upstream really received.

One 1 s clip at 48 kHz stereo (two tones, WAV pcm16) per request, through real clients over real HTTP to the
recording OpenAI stub on 127.0.0.1:

* LangChain: ``ChatSmoothGuard`` around ``langchain_openai.ChatOpenAI`` (an ``input_audio`` block);
* LlamaIndex: ``SmoothGuardLLM`` around ``llama_index.llms.openai_like.OpenAILike`` (an ``AudioBlock``);
* the proxy: ``smoothguard serve`` (the CLI's ``--audio-resample`` flag) in front of the stub, called with httpx.

Checked for each: under ``"auto"`` a Qwen2-Audio model name brings every copy, the original included, to 16 kHz
mono, and the noise a 16 kHz mono model hears (mix + ``resample_poly``) is ``audio_sigma`` within a few percent;
another model name keeps the source rate and channels, the noise it hears is 1/2.45 of that, and the result's notes
say so; an explicit ``audio_resample`` set on the adapter wins over "auto".
"""

from __future__ import annotations

import argparse
import base64
import math
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.signal import resample_poly

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS / "serve") not in sys.path:
    sys.path.insert(0, str(_TESTS / "serve"))

from fakes.openai_server import OpenAIStub  # noqa: E402
from serve_support import ProxyServer  # noqa: E402

from smoothguard import Media  # noqa: E402
from smoothguard.audio_resample import kept_fraction  # noqa: E402

N = 4
SIGMA = 0.01
QWEN_AUDIO = "Qwen/Qwen2-Audio-7B-Instruct"
OTHER = "gpt-4o-audio-preview"
QUESTION = "What do you hear?"
ANSWER = "Two steady tones."  # every candidate answers the same: exact grouping, no embedder load
PATHS = ["langchain", "llamaindex", "proxy"]


def stereo_48k() -> Media:
    t = np.arange(48000) / 48000
    data = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t + 1.0)], axis=1)
    return Media.audio(data.astype(np.float32), sample_rate=48000)


SOURCE = stereo_48k()
WAV = SOURCE.to_wav_bytes()


def heard(media: Media) -> np.ndarray:
    """What a 16 kHz mono model reads: the channels averaged, then ``resample_poly`` (as Whisper's extractor)."""
    wave = media.data.astype(np.float64)
    wave = wave if wave.ndim == 1 else wave.mean(axis=1)
    g = math.gcd(int(media.sample_rate), 16000)
    return resample_poly(wave, 16000 // g, int(media.sample_rate) // g)


def received(stub: OpenAIStub) -> list[Media]:
    """The clip of every request the stub got, decoded from its ``input_audio`` part."""
    clips = []
    for request in stub.requests:
        parts = [p for m in request.body["messages"] if isinstance(m.get("content"), list) for p in m["content"]
                 if isinstance(p, dict) and p.get("type") == "input_audio"]
        assert len(parts) == 1 and parts[0]["input_audio"]["format"] == "wav", parts
        clips.append(Media.audio(base64.b64decode(parts[0]["input_audio"]["data"])))
    return clips


def run(path: str, model: str, **settings: Any) -> tuple[list[Media], dict[str, Any]]:
    """One guarded request through ``path`` for a wrapped ``model``: the clips the upstream received, the metadata."""
    settings = {"n_samples": N, "seed": 0, "audio_sigma": SIGMA, **settings}
    with OpenAIStub(answer=lambda _body, _image: ANSWER) as stub:
        if path == "langchain":
            from langchain_core.messages import HumanMessage
            from langchain_openai import ChatOpenAI

            from smoothguard_langchain import ChatSmoothGuard

            inner = ChatOpenAI(model=model, base_url=stub.base_url, api_key="test", max_retries=0)
            audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(WAV).decode(), "format": "wav"}}
            reply = ChatSmoothGuard(model=inner, **settings).invoke(
                [HumanMessage(content=[{"type": "text", "text": QUESTION}, audio])])
            meta = reply.response_metadata["smoothguard"]
        elif path == "llamaindex":
            from llama_index.core.base.llms.types import AudioBlock, ChatMessage, MessageRole, TextBlock
            from llama_index.llms.openai_like import OpenAILike

            from smoothguard_llamaindex import SmoothGuardLLM

            inner = OpenAILike(model=model, api_base=stub.base_url, api_key="test", is_chat_model=True, max_retries=0)
            response = SmoothGuardLLM(llm=inner, **settings).chat([ChatMessage(
                role=MessageRole.USER, blocks=[TextBlock(text=QUESTION), AudioBlock(audio=WAV, format="wav")])])
            meta = response.additional_kwargs["smoothguard"]
        else:
            from smoothguard.serve import cli, create_app

            parser = argparse.ArgumentParser(prog="smoothguard serve")
            cli.configure(parser)
            argv = ["--upstream", stub.base_url, "--no-warmup", "--n-samples", str(N), "--seed", "0",
                    "--audio-sigma", str(SIGMA)]
            if "audio_resample" in settings:
                argv += ["--audio-resample", str(settings["audio_resample"])]
            config, serve_settings = cli.build_settings(parser.parse_args(argv))
            audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(WAV).decode(), "format": "wav"}}
            body = {"model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                                              audio]}]}
            with ProxyServer(create_app(None, config, settings=serve_settings)) as proxy:
                response = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=60)
            assert response.status_code == 200, response.text
            meta = response.json()["smoothguard"]
        return received(stub), meta


def _original(clips: list[Media]) -> Media:
    """The clip sent as the original: the source itself, or the source mixed and resampled to the copies' rate."""
    from smoothguard.media.audio import to_mono_at

    rate, channels = clips[0].sample_rate, clips[0].n_channels
    if (rate, channels) == (SOURCE.sample_rate, SOURCE.n_channels):
        return SOURCE
    return Media.audio(to_mono_at(SOURCE, rate), sample_rate=rate)


def the_original_index(clips: list[Media]) -> int:
    want = _original(clips)
    (index,) = [i for i, c in enumerate(clips) if np.max(np.abs(c.data - want.data)) <= 2 ** -15]
    return index


def noise_at_the_model(clips: list[Media]) -> float:
    k = the_original_index(clips)
    original = heard(clips[k])
    edge = 200
    return float(np.std(np.concatenate([(heard(c) - original)[edge:-edge] for i, c in enumerate(clips) if i != k])))


def audio_notes(meta: dict[str, Any]) -> list[str]:
    return [n for n in meta.get("notes", []) if n.startswith("audio ")]


@pytest.mark.parametrize("path", PATHS)
def test_auto_draws_the_noise_at_16k_mono_for_a_qwen2_audio_model(path):
    clips, meta = run(path, QWEN_AUDIO)
    assert len(clips) == N and {(c.sample_rate, c.n_channels) for c in clips} == {(16000, 1)}
    assert len({c.to_wav_bytes() for c in clips}) == N  # every copy has its own noise
    assert noise_at_the_model(clips) == pytest.approx(SIGMA, rel=0.04)
    assert meta["config"]["audio_resample"] == "auto"
    (site,) = meta["noise"]
    assert site == {"kind": "audio", "source": {"sample_rate": 48000, "channels": 2},
                    "drawn_at": {"sample_rate": 16000, "channels": 1}}
    assert audio_notes(meta) == []


@pytest.mark.parametrize("path", PATHS)
def test_auto_keeps_the_source_rate_for_another_model_and_says_the_noise_is_weaker(path):
    clips, meta = run(path, OTHER)
    assert {(c.sample_rate, c.n_channels) for c in clips} == {(48000, 2)}
    assert WAV in {c.to_wav_bytes() for c in clips}  # the original, as the client sent it
    assert noise_at_the_model(clips) == pytest.approx(SIGMA * kept_fraction(48000, 2), rel=0.05)
    assert noise_at_the_model(clips) < 0.42 * SIGMA
    (note,) = audio_notes(meta)
    assert "48000 Hz stereo" in note and "1/2.45 = 41%" in note and "set audio_resample" in note
    assert meta["noise"][0]["drawn_at"] == {"sample_rate": 48000, "channels": 2}


@pytest.mark.parametrize("path", PATHS)
def test_an_explicit_rate_on_the_adapter_wins_over_auto(path):
    clips, meta = run(path, OTHER, audio_resample=16000)
    assert {(c.sample_rate, c.n_channels) for c in clips} == {(16000, 1)}
    assert noise_at_the_model(clips) == pytest.approx(SIGMA, rel=0.04)
    assert audio_notes(meta) == []
    clips, meta = run(path, QWEN_AUDIO, audio_resample="none")
    assert {(c.sample_rate, c.n_channels) for c in clips} == {(48000, 2)}
    assert len(audio_notes(meta)) == 1
