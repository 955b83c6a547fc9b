"""SmoothGuard.ask / aask end to end through the Hugging Face backend (real embedder and VADER)."""

from __future__ import annotations

import pytest
from hf_cases import PROMPT, backend, clip, image

from smoothguard import GuardResult, SmoothGuard
from smoothguard.backends import Backend


@pytest.mark.parametrize(("name", "noise_space"), [("qwen2_5_vl", "pixel"), ("qwen2_5_vl", "normalized"),
                                                   ("llava", "pixel"), ("smolvlm", "normalized")])
def test_guard_ask_end_to_end(name, noise_space):
    b = backend(name, noise_space=noise_space)
    assert isinstance(b, Backend)
    guard = SmoothGuard(sigma=0.2, n_samples=5, seed=0)
    result = guard.ask(b, PROMPT, images=[image(name, seed=1)])
    assert isinstance(result, GuardResult) and result.n_used == 5 and not result.passthrough
    assert result.answer in result.answers and result.samples[0].original
    # candidate 0 is the original: its answer is the undefended answer
    assert result.samples[0].answer == b.generate(PROMPT, [[image(name, seed=1)]])[0]
    assert guard.ask(b, PROMPT, images=[image(name, seed=1)]).to_dict()["samples"] == result.to_dict()["samples"]


def test_guard_ask_audio():
    result = SmoothGuard(n_samples=3, seed=0, audio_sigma=0.05).ask(backend("qwen2_audio"), "What do you hear?",
                                                                    audio=[clip(seed=2)])
    assert result.n_used == 3 and result.answer in result.answers


def test_guard_ask_without_media_is_one_unguarded_call():
    result = SmoothGuard(seed=0).ask(backend("qwen2_vl"), PROMPT)
    assert result.passthrough and result.n_used == 1


async def test_guard_aask():
    b = backend("idefics3")
    guard = SmoothGuard(n_samples=4, seed=3)
    result = await guard.aask(b, PROMPT, images=[image("idefics3", seed=4)])
    assert result.to_dict()["samples"] == guard.ask(b, PROMPT, images=[image("idefics3", seed=4)]).to_dict()["samples"]
