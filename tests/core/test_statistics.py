"""The adaptive stop, the consensus bound and certify mean what they say (smoothguard.consensus, .certify)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from smoothguard import Media, SmoothGuard
from smoothguard.consensus import clopper_pearson_lower, look_schedule, majority_lower_bound, stop_count
from smoothguard.errors import ConfigError
from smoothguard.result import CertifyResult

SPLITS = [(0.5, 0.5), (0.6, 0.4), (0.8, 0.2), (0.95, 0.05), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.25, 0.25),
          (0.45, 0.45, 0.1), (0.4, 0.3, 0.3)]


def simulate(shares, trials, *, n_samples=11, adaptive_round=8, include_original=True, confidence=0.95, seed=0):
    """The rule on categorical streams: (false-stop rate, stop rate, mean calls). A stop on any cluster that
    clears the bar is counted (the guard also needs it to win the vote, so it stops at most this often)."""
    rng = np.random.default_rng(seed)
    looks = look_schedule(n_samples, confidence, adaptive=True, adaptive_round=adaptive_round,
                          include_original=include_original)
    draws = rng.choice(len(shares), size=(trials, n_samples), p=shares)
    offset = 1 if include_original else 0
    stopped = np.zeros(trials, bool)
    false = np.zeros(trials, bool)
    calls = np.full(trials, n_samples)
    for look in looks[:-1]:
        bar = stop_count(look.noisy, look.alpha)
        if bar is None:
            continue
        counts = np.stack([(draws[:, offset:look.calls] == c).sum(axis=1) for c in range(len(shares))], axis=1)
        leader = counts.argmax(axis=1)
        now = ~stopped & (counts.max(axis=1) >= bar)
        false |= now & (np.asarray(shares)[leader] <= 0.5)
        calls[now] = look.calls
        stopped |= now
    return false.mean(), stopped.mean(), calls.mean()


def worst_case_alpha(looks):
    """The proven bound on the false-stop probability: sum over interim looks of 2 * P(Bin(m, 1/2) >= bar)."""
    total = 0.0
    for look in looks[:-1]:
        bar = stop_count(look.noisy, look.alpha)
        if bar is not None:
            total += 2 * binom.sf(bar - 1, look.noisy, 0.5)
    return total


@pytest.mark.parametrize("shares", SPLITS)
def test_simulated_false_stop_rate_stays_under_one_minus_confidence(shares):
    trials = 40_000
    false, _, calls = simulate(shares, trials)
    assert false <= 0.05
    if max(shares) <= 0.5:  # every stop is false here: the rate is the whole stop rate
        assert false <= 0.02  # 2 * 0.5^7 = 0.0156 at worst (two clusters at exactly 1/2)
    assert 8 <= calls <= 11


def test_the_worst_case_is_two_answers_at_one_half_and_it_matches_the_derivation():
    false, stopped, _ = simulate((0.5, 0.5), 200_000, seed=1)
    assert false == stopped == pytest.approx(2 * 0.5 ** 7, abs=0.0015)


def test_clean_inputs_stop_at_the_first_look_and_easy_ones_mostly():
    assert simulate((1.0,), 100) == (0.0, 1.0, 8.0)
    _, stopped, calls = simulate((0.95, 0.05), 40_000)
    assert stopped == pytest.approx(0.95 ** 7, abs=0.01) and calls < 9.1


@pytest.mark.parametrize("n_samples", [3, 5, 11, 16, 21, 41])
@pytest.mark.parametrize("adaptive_round", [1, 2, 3, 5, 8, 10])
@pytest.mark.parametrize("include_original", [True, False])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_every_schedule_spends_at_most_alpha(n_samples, adaptive_round, include_original, confidence):
    looks = look_schedule(n_samples, confidence, adaptive=True, adaptive_round=adaptive_round,
                          include_original=include_original)
    assert looks[-1].final and looks[-1].calls == n_samples
    assert sum(look.alpha for look in looks) == pytest.approx(1 - confidence)
    assert worst_case_alpha(looks) <= 1 - confidence + 1e-12


def test_the_old_rule_was_invalid():
    # Clopper-Pearson on the leader's count as if the leader were fixed: 5 of 5 stops at 0.95 ...
    assert clopper_pearson_lower(5, 5, 0.95) > 0.5
    # ... which two answers at exactly 50/50 produce with probability 2 * 0.5^5 = 0.0625 > 0.05 at one look
    assert 2 * 0.5 ** 5 > 0.05
    # the new bound refuses it and asks for 2 * 0.5^m <= alpha
    assert majority_lower_bound(5, 5, 0.05) == 0.0 and majority_lower_bound(6, 6, 0.05) > 0.5


def test_majority_bound_is_zero_below_a_majority_and_monotone():
    assert majority_lower_bound(5, 10, 0.05) == 0.0
    bounds = [majority_lower_bound(k, 10, 0.05) for k in range(11)]
    assert bounds == sorted(bounds) and bounds[10] == pytest.approx(0.025 ** 0.1)
    assert all(b == 0.0 or b > 0.5 for b in bounds)


def test_the_bound_covers_the_winners_true_share():
    """Non-adaptive: P(bound > winner's true share) <= 1 - confidence, the winner picked from the data."""
    rng = np.random.default_rng(2)
    for shares in [(0.5, 0.5), (0.55, 0.45), (0.7, 0.3), (0.4, 0.35, 0.25)]:
        draws = rng.choice(len(shares), size=(20_000, 10), p=shares)
        counts = np.stack([(draws == c).sum(axis=1) for c in range(len(shares))], axis=1)
        winner = counts.argmax(axis=1)
        bounds = np.array([majority_lower_bound(int(k), 10, 0.05) for k in counts.max(axis=1)])
        assert (bounds > np.asarray(shares)[winner]).mean() <= 0.05


# -- through the guard ----------------------------------------------------------------------------------------


def _stream(shares, seed):
    """A model whose answers are drawn from ``shares`` (JSON answers: grouped exactly, no embedder)."""
    rng = np.random.default_rng(seed)
    return lambda variants: [json.dumps({"answer": int(rng.choice(len(shares), p=shares))}) for _ in variants]


def test_the_guard_stops_no_more_often_than_the_rule_allows():
    image = Media.image(np.zeros((8, 8, 3), np.uint8))
    guard = SmoothGuard(adaptive=True, seed=0, sigma=0.0)
    model = _stream((0.5, 0.5), 3)
    results = [guard.run([image], model) for _ in range(600)]
    stops = [r for r in results if r.n_used < 11]
    assert len(stops) / len(results) <= 0.035  # expected 0.0156 (all 7 noisy agree), sd 0.005
    assert all(r.n_used == 8 and r.consensus_lower_bound > 0.5 for r in stops)
    # at the cap (alpha_t 0.025): 9 of 10 noisy is a majority at that level, 8 is not
    assert all(r.consensus_lower_bound == 0.0 for r in results if r.n_used == 11 and r.agreement <= 8 / 11)
    assert any(r.consensus_lower_bound > 0.5 for r in results if r.n_used == 11)


def test_the_original_is_not_counted():
    image = Media.image(np.zeros((8, 8, 3), np.uint8))
    same = SmoothGuard(seed=0, n_samples=3).run([image], lambda v: ['{"x":1}'] * len(v))
    assert same.agreement == 1.0 and same.consensus_lower_bound == 0.0  # 2 noisy of 2: too few for any bound
    noisy_only = SmoothGuard(seed=0, n_samples=8, include_original=False).run([image], lambda v: ['{"x":1}'] * len(v))
    assert noisy_only.consensus_lower_bound == pytest.approx(clopper_pearson_lower(8, 8, 0.975))

    def model(variants):  # the original says one thing, every noisy copy another
        return ['{"x":0}' if v[0] is image else '{"x":1}' for v in variants]

    result = SmoothGuard(seed=0, sigma=0.5).run([image], model)
    assert result.answer == '{"x":1}' and result.agreement == pytest.approx(10 / 11)
    assert result.consensus_lower_bound == pytest.approx(clopper_pearson_lower(10, 10, 0.975))


def test_a_deadline_between_planned_looks_reports_no_bound():
    image = Media.image(np.zeros((8, 8, 3), np.uint8))
    guard = SmoothGuard(adaptive=True, adaptive_round=3, seed=0, time_budget=1e-9)
    result = guard.run([image], lambda v: ['{"x":1}'] * len(v))
    assert result.n_used == 3 and result.consensus_lower_bound == 0.0 and result.radius == 0.0


# -- certify --------------------------------------------------------------------------------------------------


class CoinBackend:
    """A backend whose answer depends on the noise it is given: the noisy image's mean brightness against a
    threshold, so the share of "bright" answers is set by where the clean image sits."""

    def __init__(self, threshold=0.5):
        self.threshold = threshold
        self.calls = []

    def generate(self, prompt, variants):
        self.calls.append(len(variants))
        out = []
        for media in variants:
            level = float(media[0].to_array().mean())
            out.append("The image is bright." if level > self.threshold else "The image is dark.")
        return out


def _pixel_image(level):
    return Media.image(np.full((4, 4, 3), level, dtype=np.float32))


def test_certify_returns_the_answer_and_cohens_radius():
    backend = CoinBackend()
    guard = SmoothGuard(sigma=0.1, sigma_space="pixel", seed=0)
    result = guard.certify(backend, "Bright or dark?", images=[_pixel_image(0.9)], n0=10, n=200, alpha=0.001,
                           batch_size=64)
    assert isinstance(result, CertifyResult) and not result.abstained
    assert result.answer == "The image is bright." and result.count == 200 and result.failed == 0
    assert result.p_lower == pytest.approx(0.001 ** (1 / 200))
    from scipy.stats import norm

    assert result.radius == pytest.approx(0.1 * norm.ppf(0.001 ** (1 / 200)))
    assert (result.n0, result.n, result.alpha, result.sigma, result.unit) == (10, 200, 0.001, 0.1, "pixel")
    assert backend.calls == [10, 64, 64, 64, 8] and result.n_used == 210
    assert json.loads(json.dumps(result.to_dict()))["radius"] == result.radius


def test_certify_abstains_as_a_value_on_a_coin_flip():
    guard = SmoothGuard(sigma=0.5, sigma_space="pixel", seed=1)
    result = guard.certify(CoinBackend(), "Bright or dark?", images=[_pixel_image(0.5)], n0=10, n=100)
    assert result.abstained and result.answer is None and result.radius == 0.0 and result.p_lower <= 0.5
    assert 30 <= result.count <= 70


def test_certify_counts_with_a_rule_fixed_on_the_selection():
    # A paraphrase never seen in the selection is judged by distance to the selected cluster's centre;
    # a failed call counts against the answer.
    answers = iter(["Paris."] * 5 + ["Paris."] * 6 + ["The capital is Paris."] * 2 + ["London."] * 1)

    class Scripted:
        def generate(self, prompt, variants):
            out = []
            for _ in variants:
                a = next(answers, None)
                out.append(RuntimeError("down") if a is None else a)
            return out

    guard = SmoothGuard(sigma=0.1, seed=0)
    result = guard.certify(Scripted(), "Capital?", images=[_pixel_image(0.5)], n0=5, n=10, alpha=0.05,
                           threshold=0.0)
    assert result.selection == ("Paris.",) * 5
    assert result.count == 6 and result.failed == 1  # threshold 0: only Paris's own texts count
    assert ("London.", 1, False) in result.top_answers


def test_certify_validates_its_arguments():
    guard = SmoothGuard()
    with pytest.raises(ConfigError, match="n0"):
        guard.certify(CoinBackend(), "?", images=[_pixel_image(0.5)], n0=0)
    with pytest.raises(ConfigError, match="alpha"):
        guard.certify(CoinBackend(), "?", images=[_pixel_image(0.5)], alpha=1.5)
    with pytest.raises(ConfigError, match="image or audio"):
        guard.certify(CoinBackend(), "?")


@pytest.mark.slow
def test_certify_through_the_testbed_backend_draws_noise_in_the_model(testbed_main, testbed_questions):
    example = testbed_questions[0]  # a yes/no question the model answers right on the clean image
    guard = SmoothGuard(sigma=0.25, seed=0)
    result = guard.certify(testbed_main, example.question, images=[Media.image(example.image)], n0=10, n=100,
                           alpha=0.001, batch_size=50)
    assert result.n_used == 110 and result.failed == 0 and result.unit == "normalized"
    if not result.abstained:
        assert result.answer == example.answer and result.count > 50
        assert 0 < result.radius <= 0.25 * 2.2  # sigma * Phi^-1(0.001^(1/100)) = 0.25 * 1.50 at most
    assert sum(c for _, c, _ in result.top_answers) == 100


class ThresholdBackend:
    """Answers "bright" when the first pixel of the noisy copy exceeds ``threshold``: a base classifier whose
    probability of "bright" under the guard's noise is known exactly."""

    def __init__(self, threshold):
        self.threshold = threshold

    def generate(self, prompt, variants):
        return ["Bright." if float(v[0].to_array()[0, 0, 0]) > self.threshold else "Dark." for v in variants]


def test_certify_bounds_cover_the_true_probability_at_rate_alpha():
    from scipy.stats import norm

    sigma, p_true, alpha = 0.1, 0.6, 0.1
    backend = ThresholdBackend(0.5 + sigma * norm.ppf(1 - p_true))  # P("Bright.") = 0.6 for a pixel at 0.5
    image = [Media.image(np.full((2, 2, 3), 0.5, dtype=np.float32))]
    # fresh noise per run, seeded so that the test is deterministic (unseeded, "never Dark." failed ~6% of runs:
    # the guarantee allows a wrong certificate with probability alpha, and 150 runs make one plausible)
    runs = [SmoothGuard(sigma=sigma, sigma_space="pixel", seed=seed).certify(backend, "?", images=image, n0=5, n=60,
                                                                             alpha=alpha) for seed in range(150)]
    bright = [r for r in runs if not r.abstained and r.answer == "Bright."]
    wrong = [r for r in runs if not r.abstained and r.answer == "Dark."]  # its true share is 0.4: never > 1/2
    over = sum(r.p_lower > p_true for r in bright)
    assert len(wrong) / len(runs) <= alpha  # a wrong certificate is allowed with probability alpha; here 0.4 < 1/2
    assert over / len(runs) <= alpha + 0.05  # the bound overshoots the truth in at most ~alpha of runs
    assert len(bright) >= 20  # the test has power: "Bright." is certified often, its bound near the truth
    # the estimation count is unbiased: the selection does not see it
    selected = [r.count / r.n for r in runs if r.selection.count("Bright.") >= 3]
    assert np.mean(selected) == pytest.approx(p_true, abs=0.03)
