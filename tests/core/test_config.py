import dataclasses
import json

import pytest

from smoothguard import ConfigError, GuardConfig, SmoothGuard
from smoothguard.config import CLIP_STD


def test_defaults_match_the_design_table():
    c = GuardConfig()
    assert (c.sigma, c.audio_sigma, c.n_samples, c.include_original, c.seed) == (0.1, 0.01, 11, True, None)
    assert (c.clustering, c.on_flag, c.adaptive, c.remote_media) == ("kmeans", "answer", False, "fetch")
    assert c.embedder == "sentence-transformers/all-MiniLM-L6-v2"
    assert c.safety_weight > 0 and c.time_budget is None and GuardConfig(time_budget=2).time_budget == 2.0


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": "0.1"}, "sigma"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"n_samples": True}, "n_samples"),
        ({"clustering": "dbscan"}, "'kmeans'"),
        ({"on_flag": "ignore"}, "on_flag"),
        ({"sigma_space": "raw"}, "sigma_space"),
        ({"remote_media": "download"}, "remote_media"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"confidence": 1.0}, "confidence"),
        ({"quorum": 12}, "quorum"),
        ({"seed": -1}, "seed"),
        ({"channel_std": (0.2, 0.2)}, "channel_std"),
        ({"channel_std": (0.2, 0.0, 0.2)}, "channel_std"),
        ({"include_original": 1}, "include_original"),
        ({"embedder": ""}, "embedder"),
        ({"n_clusters": 1}, "n_clusters"),
        ({"fetch_timeout": 0}, "fetch_timeout"),
        ({"time_budget": 0}, "time_budget"),
        ({"time_budget": float("inf")}, "time_budget"),
        ({"time_budget": True}, "time_budget"),
    ],
)
def test_invalid_settings_fail_at_construction(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        GuardConfig(**settings)
    with pytest.raises(ConfigError):
        SmoothGuard(**settings)


def test_unknown_setting_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean 'n_samples'"):
        SmoothGuard(n_sample=5)
    with pytest.raises(ConfigError, match="did you mean 'image_resize'"):  # the dataclass itself, not only kwargs
        GuardConfig(image_resise="openai")
    with pytest.raises(ConfigError, match="known settings: "):
        GuardConfig(colour="red")
    assert GuardConfig(0.2).sigma == 0.2 and dataclasses.replace(GuardConfig(), seed=3).seed == 3


def test_numbers_are_normalised_and_numpy_ints_accepted():
    import numpy as np

    c = GuardConfig(sigma=1, seed=np.int64(3), channel_std=[0.5, 0.5, 0.5])
    assert isinstance(c.sigma, float) and type(c.seed) is int and c.channel_std == (0.5, 0.5, 0.5)


def test_replace_validates_and_to_dict_is_json():
    c = GuardConfig(channel_std=CLIP_STD)
    assert c.replace(sigma=0.2).sigma == 0.2 and c.sigma == 0.1
    with pytest.raises(ConfigError):
        c.replace(sigma=-1)
    json.dumps(c.to_dict())


def test_guard_takes_a_config_or_keywords():
    assert SmoothGuard(GuardConfig(sigma=0.2)).config.sigma == 0.2
    assert SmoothGuard(GuardConfig(sigma=0.2), n_samples=3).config.n_samples == 3
    with pytest.raises(TypeError):
        SmoothGuard({"sigma": 0.2})
