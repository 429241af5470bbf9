"""FAISS search by inner product: exact equals brute force, HNSW finds nearly the same, removals never come back."""
import numpy as np
import pytest

pytest.importorskip("faiss")

from recbole_milk.errors import ConfigError  # noqa: E402
from recbole_milk.search import VectorIndex  # noqa: E402


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((500, 16)).astype(np.float32), rng.standard_normal((20, 16)).astype(np.float32)


def test_exact_search_is_the_brute_force_top_k_under_the_callers_ids(vectors):
    keys, queries = vectors
    index = VectorIndex(16, "exact")
    ids = np.arange(1000, 1500)
    index.add(ids, keys)
    found, scores = index.search(queries, 10)
    brute = queries @ keys.T
    expected = np.argsort(-brute, axis=1)[:, :10]
    assert np.array_equal(found, ids[expected])
    assert np.allclose(scores, np.take_along_axis(brute, expected, axis=1), atol=1e-4)


def test_hnsw_recall_against_exact_is_high_on_a_small_set(vectors):
    keys, queries = vectors
    exact, approximate = VectorIndex(16, "exact"), VectorIndex(16, "hnsw")
    for index in (exact, approximate):
        index.add(np.arange(len(keys)), keys)
    truth, _ = exact.search(queries, 10)
    found, scores = approximate.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.9
    # Scores are the true inner products of the returned vectors, best first.
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, keys[found]), atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_removed_ids_never_come_back_and_k_is_capped_by_what_is_left(vectors, kind):
    keys, queries = vectors
    index = VectorIndex(16, kind)
    index.add(np.arange(len(keys)), keys)
    removed = np.arange(0, 450)
    index.remove(removed[:100])
    assert len(index) == 400
    found, _ = index.search(queries, 50)
    assert not np.isin(found, removed[:100]).any()
    index.remove(removed[100:])  # now most ids are removed: HNSW rebuilds its graph from the live ones
    assert len(index) == 50
    found, _ = index.search(queries, 80)
    assert found.shape == (20, 50)
    live = found[found >= 0]
    assert not np.isin(live, removed).any() and set(live) <= set(range(450, 500))
    assert (found >= 0).mean() > 0.9


def test_an_empty_index_answers_nothing_and_bad_settings_are_named():
    index = VectorIndex(4)
    found, scores = index.search(np.ones(4), 5)
    assert found.shape == (1, 0) and scores.shape == (1, 0)
    with pytest.raises(ConfigError, match="Index kind 'ivf'"):
        VectorIndex(4, "ivf")
    with pytest.raises(ConfigError, match="ef_search"):
        VectorIndex(4, "hnsw", ef_search=0)
