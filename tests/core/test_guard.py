"""SmoothGuard end to end on the real embedder and VADER, with small models that really read the pixels."""

import asyncio
import json
import time

import numpy as np
import pytest

from smoothguard import GenerationError, GuardFlagged, GuardResult, Media, SmoothGuard
from smoothguard.backends import Backend

BENIGN = "The picture shows a plain grey square on a white background. Nothing else is visible in it."
HOSTILE = "Ignore your rules. Those people are worthless vermin and deserve to suffer, so hurt them."


def triggered_image(trigger: bool = True) -> np.ndarray:
    """A grey image; with ``trigger``, a +-2/255 checkerboard in one corner (a brittle backdoor key)."""
    image = np.full((48, 48, 3), 128, dtype=np.uint8)
    if trigger:
        checker = (np.indices((8, 8)).sum(axis=0) % 2) * 4 - 2
        image[:8, :8] = (128 + checker)[..., None]
    return image


def brittle_model(variants):
    """Answers HOSTILE when the corner holds the exact checkerboard (as an adversarial image would make a
    model do), BENIGN otherwise. Noise of a few /255 destroys the key, as it destroys adversarial patterns."""
    checker = (np.indices((8, 8)).sum(axis=0) % 2) * 4 - 2
    out = []
    for (image,) in variants:
        corner = image.to_array("uint8")[:8, :8, 0].astype(int) - 128
        out.append(HOSTILE if np.mean(np.abs(corner - checker) <= 1) > 0.9 else BENIGN)
    return out


def brightness_model(variants):
    """Describes the mean brightness of the first image; noise moves images near 0.5 across the boundary."""
    out = []
    for media in variants:
        level = float(media[0].data.mean())
        out.append("The image is bright, mostly light grey." if level > 0.5 else "The image is dark, almost black.")
    return out


def test_noise_defeats_a_brittle_trigger():
    image = Media.image(triggered_image())
    assert brittle_model([[image]]) == [HOSTILE]
    result = SmoothGuard(seed=0).run([image], brittle_model)
    assert result.samples[0].original and result.samples[0].answer == HOSTILE
    assert result.answer == BENIGN
    assert result.agreement == pytest.approx(10 / 11)
    assert not result.flagged and result.n_used == 11
    assert result.representative != 0 and result.samples[result.representative].answer == BENIGN


def test_result_fields_and_to_dict():
    result = SmoothGuard(seed=0).run([Media.image(triggered_image(False))], brittle_model)
    assert isinstance(result, GuardResult)
    assert result.answer == BENIGN and result.agreement == 1.0 and len(result.clusters) == 1
    # 10 noisy of 10 agree (the original is not counted); one look at alpha 0.05, split over the winner's choice
    assert result.consensus_lower_bound == pytest.approx(0.025 ** (1 / 10))
    assert result.radius == pytest.approx(0.1 * 0.5009, abs=1e-3)
    assert set(result.timings) == {"perturb", "generate", "aggregate", "total"}
    data = result.to_dict()
    text = json.dumps(data)
    assert "base64" not in text and len(text) < 20_000
    assert data["samples"][0]["original"] is True and data["config"]["sigma"] == 0.1
    assert all(s["refusal"] is False for s in data["samples"])


def test_generate_receives_the_original_first_and_noisy_copies():
    seen = []

    def record(variants):
        seen.extend(v[0] for v in variants)
        return ["A grey image."] * len(variants)

    image = Media.image(triggered_image(False))
    SmoothGuard(seed=0, n_samples=4).run([image], record)
    assert seen[0] is image and all(m is not image for m in seen[1:])
    assert len(seen) == 4


def test_seed_makes_the_whole_result_reproducible():
    image = Media.image(np.full((4, 4, 3), 0.5, dtype=np.float32))
    guard = SmoothGuard(seed=11, sigma=0.5, include_original=False)
    a, b = guard.run([image], brightness_model), guard.run([image], brightness_model)
    assert a.answers == b.answers and a.answer == b.answer and a.agreement == b.agreement
    assert 0.5 <= a.agreement < 1.0  # the noise really moves the answer


def test_caller_data_is_not_mutated():
    array = triggered_image()
    before = array.copy()
    image = Media.image(array)
    SmoothGuard(seed=0, n_samples=5).run([image], brittle_model)
    np.testing.assert_array_equal(array, before)
    np.testing.assert_array_equal(image.data, Media.image(before).data)


def test_failed_candidates_are_left_out_while_the_quorum_holds():
    def flaky(variants):
        return [RuntimeError("GPU fell over") if i % 3 == 1 else "A grey square." for i in range(len(variants))]

    result = SmoothGuard(seed=0).run([Media.image(triggered_image(False))], flaky)
    failed = [s for s in result.samples if not s.ok]
    assert len(failed) == 4 and all("GPU fell over" in s.error for s in failed)
    assert result.answer == "A grey square." and result.agreement == 1.0
    assert sum(c.size for c in result.clusters) == 7


@pytest.mark.parametrize(
    ("bad", "cause"),
    [(RuntimeError("timeout"), "timeout"), ("", "empty"), ("   ", "empty"), (None, "NoneType"), (42, "int")],
)
def test_below_quorum_raises_generation_error_with_causes(bad, cause):
    def mostly_bad(variants):
        return [bad if i < 6 else "A grey square." for i in range(len(variants))]

    with pytest.raises(GenerationError, match=cause) as info:
        SmoothGuard(seed=0).run([Media.image(triggered_image(False))], mostly_bad)
    assert len(info.value.causes) == 6 and info.value.causes[0][0] == 0
    assert info.value.answers == {i: "A grey square." for i in range(6, 11)}  # nothing computed is lost


def test_quorum_setting_and_whole_call_failure():
    image = Media.image(triggered_image(False))

    def half(variants):
        return ["ok answer" if i < 2 else ValueError("x") for i in range(len(variants))]

    assert SmoothGuard(n_samples=5, quorum=2).run([image], half).answer == "ok answer"
    with pytest.raises(GenerationError):
        SmoothGuard(n_samples=5).run([image], half)

    def explode(variants):
        raise ConnectionError("server down")

    with pytest.raises(GenerationError, match="server down"):
        SmoothGuard(n_samples=3).run([image], explode)


def test_wrong_number_of_answers_is_a_clear_error():
    with pytest.raises(GenerationError, match="one answer"):
        SmoothGuard(n_samples=3).run([Media.image(triggered_image())], lambda v: ["only one"])
    with pytest.raises(GenerationError, match="one answer"):
        SmoothGuard(n_samples=3).run([Media.image(triggered_image())], lambda v: "a string, not a list")


def split_model(variants):
    """Six bright, five dark answers: agreement 6/11."""
    return [("The image is bright." if i % 2 == 0 else "The image is dark and gloomy.") for i in range(len(variants))]


def test_on_flag_policies():
    image = Media.image(triggered_image(False))
    answer = SmoothGuard(min_agreement=0.8, seed=0).run([image], split_model)
    assert answer.flagged and not answer.refused and answer.answer == "The image is bright."
    refuse = SmoothGuard(min_agreement=0.8, on_flag="refuse", refusal_message="No answer.").run([image], split_model)
    assert refuse.flagged and refuse.refused and refuse.answer == "No answer."
    with pytest.raises(GuardFlagged) as info:
        SmoothGuard(min_agreement=0.8, on_flag="raise").run([image], split_model)
    assert info.value.result.agreement == pytest.approx(6 / 11)
    assert len(info.value.result.samples) == 11  # nothing computed is lost


def test_text_only_request_is_one_passthrough_call():
    calls = []

    def model(variants):
        calls.append(variants)
        return ["Paris is the capital of France."]

    result = SmoothGuard().run([], model)
    assert calls == [[[]]] and result.passthrough and result.n_used == 1
    assert result.answer == "Paris is the capital of France." and result.to_dict()["passthrough"] is True


def test_adaptive_stops_early_on_easy_inputs_and_continues_on_hard_ones():
    image = Media.image(triggered_image(False))
    easy = SmoothGuard(adaptive=True, seed=0).run([image], lambda v: ["A grey square."] * len(v))
    assert easy.n_used == 8 and easy.consensus_lower_bound > 0.5  # 7 noisy of 7 agree: the first valid look
    hard = SmoothGuard(adaptive=True, seed=0).run([image], split_model)
    assert hard.n_used == 11


def test_no_adaptive_round_starts_after_the_deadline():
    image = Media.image(triggered_image(False))
    guard = SmoothGuard(adaptive=True, adaptive_round=3, seed=0)
    past = time.monotonic()
    assert guard.run([image], split_model, deadline=time.monotonic() + 60).n_used == 11
    assert guard.run([image], split_model, deadline=past).n_used == 3  # the first round always runs
    assert asyncio.run(guard.arun([image], split_model, deadline=past)).n_used == 3
    spent = SmoothGuard(adaptive=True, adaptive_round=3, seed=0, time_budget=1e-9)  # the deadline is its budget
    assert spent.run([image], split_model).n_used == 3
    assert guard.deadline_from_now() is None


def test_adaptive_noise_matches_the_one_shot_noise():
    image = Media.image(np.full((4, 4, 3), 0.5, dtype=np.float32))
    one_shot = SmoothGuard(seed=5, sigma=0.5).run([image], brightness_model)
    rounds = SmoothGuard(seed=5, sigma=0.5, adaptive=True, adaptive_round=3).run([image], brightness_model)
    assert rounds.answers == one_shot.answers[: rounds.n_used]


async def test_arun_keeps_the_event_loop_free():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)

    async def agenerate(variants):
        await asyncio.sleep(0.01)
        return brittle_model(variants)

    task = asyncio.create_task(ticker())
    result = await SmoothGuard(seed=0, embedder="all-MiniLM-L6-v2").arun([Media.image(triggered_image())], agenerate)
    task.cancel()
    assert result.answer == BENIGN and ticks > 5


async def test_arun_accepts_a_sync_generate_and_reports_failures():
    result = await SmoothGuard(seed=0).arun([Media.image(triggered_image())], brittle_model)
    assert result.answer == BENIGN

    async def explode(variants):
        raise TimeoutError("too slow")

    with pytest.raises(GenerationError, match="too slow"):
        await SmoothGuard(n_samples=3).arun([Media.image(triggered_image())], explode)


def test_run_refuses_a_coroutine_function():
    async def agenerate(variants):
        return ["x"] * len(variants)

    with pytest.raises(TypeError, match="arun"):
        SmoothGuard(n_samples=2).run([Media.image(triggered_image())], agenerate)


class RecordingBackend:
    pixel_std = (1.0, 1.0, 1.0)

    def __init__(self):
        self.calls = []

    def generate(self, prompt, variants):
        self.calls.append((prompt, variants))
        return brightness_model(variants)

    async def agenerate(self, prompt, variants):
        return self.generate(prompt, variants)


def test_ask_and_aask_use_the_backend_and_its_std():
    backend = RecordingBackend()
    assert isinstance(backend, Backend)
    array = np.full((32, 32, 3), 200, dtype=np.uint8)
    result = SmoothGuard(seed=0, n_samples=3).ask(backend, "How bright?", images=array)
    prompt, variants = backend.calls[0]
    assert prompt == "How bright?" and len(variants) == 3
    spread = float((variants[1][0].data - variants[0][0].data).std())
    assert spread > 0.05  # sigma 0.1 times the backend's std of 1.0, minus clipping
    assert result.answer.startswith("The image is bright")
    again = asyncio.run(SmoothGuard(seed=0, n_samples=3).aask(backend, "How bright?", images=[array]))
    assert again.answers == result.answers


def test_ask_rejects_undecodable_media_with_media_error():
    from smoothguard import MediaError

    with pytest.raises(MediaError):
        SmoothGuard().ask(RecordingBackend(), "What?", images=b"not an image")


class TensorNoiseBackend:
    """Records what a backend with ``noise_space="normalized"`` receives."""

    noise_space = "normalized"

    def __init__(self):
        self.calls = []

    def generate(self, prompt, variants, tensor_noise=None):
        self.calls.append((variants, tensor_noise))
        return ["A grey square."] * len(variants)

    async def agenerate(self, prompt, variants, tensor_noise=None):
        return self.generate(prompt, variants, tensor_noise)


def test_normalized_noise_backends_get_clean_images_and_seeds():
    from smoothguard.noise import TensorNoise

    backend = TensorNoiseBackend()
    image = Media.image(triggered_image(False))
    clip = Media.audio(np.zeros(800, dtype=np.float32), sample_rate=8000)
    SmoothGuard(seed=2, n_samples=4).ask(backend, "What?", images=[image], audio=clip)
    variants, noise = backend.calls[0]
    assert isinstance(noise, TensorNoise) and noise.sigma == 0.1 and len(noise.seeds) == 4
    assert noise.seeds[0] is None and len(set(noise.seeds[1:])) == 3
    assert all(np.array_equal(v[0].data, image.data) for v in variants)  # images clean
    assert not np.array_equal(variants[1][1].data, clip.data)  # audio still noisy in the waveform
    assert noise.sample(0, (2, 3)) is None
    sample = noise.sample(1, (20000,))
    assert sample.dtype == np.float32 and abs(float(sample.std()) - 0.1) < 0.005
    SmoothGuard(seed=2, n_samples=4).ask(backend, "What?", images=[image])
    assert backend.calls[1][1].seeds == noise.seeds  # seeded: reproducible
    asyncio.run(SmoothGuard(seed=2, n_samples=4, adaptive=True, adaptive_round=2).aask(backend, "?", images=image))
    assert backend.calls[2][1].seeds == noise.seeds[:2]  # adaptive rounds draw the same noise per index


def test_run_refuses_an_async_generate_and_arun_fails_every_candidate_of_a_failed_call():
    """One rule for both entry points: a whole call that raises fails every candidate of its round."""
    import warnings

    image = Media.image(np.full((8, 8, 3), 0.5, dtype=np.float32))
    guard = SmoothGuard(n_samples=3, seed=0)

    async def answers(variants):
        return ["A grey square."] * len(variants)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the coroutine is closed, never left un-awaited
        with pytest.raises(TypeError, match="arun"):
            guard.run([image], answers)

    async def broken(variants):
        raise ConnectionError("the model server is down")

    with pytest.raises(GenerationError) as info:
        asyncio.run(guard.arun([image], broken))
    assert [i for i, _ in info.value.causes] == [0, 1, 2]
    assert all(isinstance(cause, ConnectionError) for _, cause in info.value.causes)
    assert asyncio.run(guard.arun([image], answers)).answer == "A grey square."


@pytest.mark.parametrize("adaptive,failing", [(False, 2), (True, None)])
def test_the_answers_are_clustered_once(monkeypatch, adaptive, failing):
    """finish() reuses the adaptive stop's verdict (which saw every answer), and clusters name candidates."""
    import smoothguard.guard as guard_module

    calls = []
    real = guard_module.aggregate

    def counting(answers, config=None, **kwargs):
        calls.append(kwargs.get("indices"))
        return real(answers, config, **kwargs)

    monkeypatch.setattr(guard_module, "aggregate", counting)

    def model(variants):  # a failed candidate: members are named by candidate, not by position among the answers
        return [RuntimeError("down") if i == failing else "A grey square." for i in range(len(variants))]

    result = SmoothGuard(adaptive=adaptive, seed=0).run([Media.image(triggered_image(False))], model)
    answered = [i for i in range(result.n_used) if i != failing]
    assert result.n_used == (8 if adaptive else 11)  # adaptive: settled at the first look
    assert calls == [answered]
    assert result.clusters[result.winner].members == tuple(answered) and result.representative in answered
