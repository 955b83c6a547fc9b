"""The shared greedy-decoding rule (smoothguard.decoding): which models take no temperature 0, and the warnings."""

from __future__ import annotations

import warnings

import pytest

from smoothguard.decoding import greedy_temperature, refuses_zero_temperature


@pytest.mark.parametrize("name", ["o1", "o1-mini", "o3", "o3-mini-2025-01-31", "o4-mini", "gpt-5", "gpt-5-mini",
                                  "gpt-5.1", "GPT-5-nano", "openai/gpt-5", "gpt-6-sol"])
def test_reasoning_models_refuse_temperature_zero(name):
    assert refuses_zero_temperature(name)


@pytest.mark.parametrize("name", [None, "", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5-chat-latest",
                                  "gpt-5.1-chat-latest", "gpt-oss-120b", "Qwen/Qwen2.5-VL-7B-Instruct", "omni-vlm",
                                  "claude-sonnet-4"])
def test_other_models_take_it(name):
    assert not refuses_zero_temperature(name)


def test_reasoning_effort_none_lets_gpt5_take_it_but_not_the_o_series():
    assert not refuses_zero_temperature("gpt-5.1", reasoning_effort="none")
    assert refuses_zero_temperature("o3", reasoning_effort="none")


def test_greedy_temperature_decides_and_warns_once_per_class_and_model():
    class Sampler:
        pass

    assert greedy_temperature(Sampler(), has_setting=True, temperature=0.7, model_name="gpt-4o")
    assert greedy_temperature(Sampler(), has_setting=True, temperature=None, model_name="gpt-4o")
    assert not greedy_temperature(Sampler(), has_setting=True, temperature=0, model_name="gpt-4o")  # already 0
    with pytest.warns(UserWarning, match="no temperature 0 for 'o1'"):
        assert not greedy_temperature(Sampler(), has_setting=True, temperature=1.0, model_name="o1")
    with pytest.warns(UserWarning, match="cannot ask Sampler for greedy decoding"):
        assert not greedy_temperature(Sampler(), has_setting=True, temperature=0.5, model_name="x",
                                      provider_refuses=True)
    with pytest.warns(UserWarning, match="has no `temperature` setting"):
        assert not greedy_temperature(Sampler(), has_setting=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not greedy_temperature(Sampler(), has_setting=True, temperature=1.0, model_name="o1")
        assert not greedy_temperature(Sampler(), has_setting=False)
