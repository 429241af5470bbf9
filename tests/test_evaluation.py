import math

import pytest
import torch

from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.evaluation import (
    GroupMetricAccumulator,
    break_ties_at_random,
    gini_index,
    long_tail_items,
    restrict_to_candidates,
)


def test_non_candidates_are_never_ranked_above_candidates():
    scores = torch.tensor([[9.0, 1.0, 8.0, 2.0], [0.0, 5.0, 7.0, 6.0]])
    candidates = torch.tensor([False, True, False, True])
    masked = restrict_to_candidates(scores.clone(), candidates)
    top = torch.topk(masked, 2, dim=1).indices
    assert set(top[0].tolist()) == {1, 3} and set(top[1].tolist()) == {1, 3}


def test_tie_break_keeps_the_order_of_distinct_scores():
    generator = torch.Generator().manual_seed(0)
    scores = torch.tensor([[1.0, float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))), -3.0, float("-inf")]])
    broken = break_ties_at_random(scores, generator)
    assert broken[0, 1] > broken[0, 0] > broken[0, 2] > broken[0, 3]
    assert broken[0, 3] == float("-inf")


def test_tie_break_spreads_equal_scores_uniformly():
    generator = torch.Generator().manual_seed(0)
    scores = torch.zeros(4000, 5)
    winners = break_ties_at_random(scores, generator).argmax(dim=1)
    counts = torch.bincount(winners, minlength=5).double()
    # Each item wins with probability 1/5: 800 +- 4 standard deviations (about 25 each).
    assert torch.all((counts - 800).abs() < 100), counts


def test_tie_break_is_reproducible_for_a_seed():
    scores = torch.zeros(3, 6)
    first = break_ties_at_random(scores, torch.Generator().manual_seed(7))
    second = break_ties_at_random(scores, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def _hand_ndcg(hit_ranks, n_pos, k):
    dcg = sum(1 / math.log2(r + 1) for r in hit_ranks if r <= k)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, n_pos) + 1))
    return dcg / idcg


def test_group_metrics_count_only_the_groups_positives():
    # Items 1..4; items 1, 2 are complete (group 0), items 3, 4 miss one modality (group 1).
    item_group = torch.tensor([0, 0, 0, 1, 1])
    accumulator = GroupMetricAccumulator(item_group, ["complete", "missing_1"], topk=[1, 2], metrics=["Recall", "NDCG"])
    # One user ranks 3 > 1 > 4 > 2 and likes items 1 and 4.
    scores = torch.tensor([[float("-inf"), 3.0, 1.0, 4.0, 2.0]])
    accumulator.update(scores, torch.tensor([0, 0]), torch.tensor([1, 4]))
    result = accumulator.result(decimals=6)
    # complete: positive item 1 at rank 2. missing_1: positive item 4 at rank 3.
    assert result["complete"]["recall@1"] == 0.0
    assert result["complete"]["recall@2"] == 1.0
    assert result["complete"]["ndcg@2"] == pytest.approx(_hand_ndcg([2], 1, 2), abs=1e-6)
    assert result["missing_1"]["recall@2"] == 0.0
    assert result["complete"]["users"] == 1 and result["missing_1"]["users"] == 1


def test_group_metrics_recombine_to_overall_when_each_user_likes_one_group():
    item_group = torch.tensor([0, 0, 0, 1, 1, 1])
    groups = GroupMetricAccumulator(item_group, ["complete", "missing_1"], topk=[2], metrics=["recall", "ndcg"])
    overall = GroupMetricAccumulator(torch.zeros(6, dtype=torch.long), ["all"], topk=[2], metrics=["recall", "ndcg"])
    scores = torch.tensor([[-9.0, 5, 4, 3, 2, 1], [-9.0, 1, 2, 3, 4, 5], [-9.0, 3, 5, 1, 4, 2]])
    # User 0 likes item 2 (complete), user 1 item 4 and user 2 item 5 (both missing one modality).
    positive_u = torch.tensor([0, 1, 2])
    positive_i = torch.tensor([2, 4, 5])
    for accumulator in (groups, overall):
        accumulator.update(scores, positive_u, positive_i)
    g, o = groups.result(decimals=8), overall.result(decimals=8)["all"]
    n0, n1 = g["complete"]["users"], g["missing_1"]["users"]
    for metric in ("recall@2", "ndcg@2"):
        recombined = (n0 * g["complete"][metric] + n1 * g["missing_1"][metric]) / (n0 + n1)
        assert recombined == pytest.approx(o[metric], abs=1e-7)
    # Hand values: user 0 hits item 2 at rank 2; user 1 hits item 4 at rank 2; user 2 misses item 5 (rank 4).
    assert o["recall@2"] == pytest.approx(2 / 3, abs=1e-7)
    assert o["ndcg@2"] == pytest.approx(2 * _hand_ndcg([2], 1, 2) / 3, abs=1e-7)


def test_group_metrics_match_recbole_on_a_random_ranking():
    from recbole.evaluator.metrics import MAP, MRR, NDCG, Hit, Precision, Recall

    apply_numpy_aliases()

    torch.manual_seed(3)
    scores = torch.rand(20, 30)
    positive = torch.rand(20, 30) < 0.2
    positive[:, 0] = False
    positive[torch.arange(20), torch.randint(1, 30, (20,))] = True
    positive_u, positive_i = positive.nonzero(as_tuple=True)
    names = ["recall", "ndcg", "hit", "mrr", "precision", "map"]
    accumulator = GroupMetricAccumulator(torch.zeros(30, dtype=torch.long), ["all"], topk=[5, 10], metrics=names)
    accumulator.update(scores, positive_u, positive_i)
    ours = accumulator.result(decimals=8)["all"]

    top = torch.topk(scores, 10, dim=1).indices
    hits = positive.gather(1, top).int()
    struct = torch.cat([hits, positive.sum(1, keepdim=True).int()], dim=1)
    config = {"topk": [5, 10], "metric_decimal_place": 8}
    reference = {}
    for metric in (Recall(config), NDCG(config), Hit(config), MRR(config), Precision(config), MAP(config)):
        reference.update(metric.calculate_metric({"rec.topk": struct}))
    assert set(reference) == {f"{name}@{k}" for name in names for k in (5, 10)}
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_group_map_counts_the_groups_hits_over_its_positives():
    item_group = torch.tensor([0, 0, 0, 1, 1])
    accumulator = GroupMetricAccumulator(item_group, ["complete", "missing_1"], topk=[4], metrics=["MAP"])
    # One user ranks 3 > 1 > 4 > 2 and likes items 1, 2 (complete) and 3 (missing_1).
    accumulator.update(torch.tensor([[float("-inf"), 3.0, 1.0, 4.0, 2.0]]), torch.tensor([0, 0, 0]),
                       torch.tensor([1, 2, 3]))
    result = accumulator.result(decimals=8)
    # complete: hits at ranks 2 and 4, counted among the group's hits: (1/2 + 2/4) / 2. missing_1: rank 1.
    assert result["complete"]["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result["missing_1"]["map@4"] == pytest.approx(1.0)


# ----- list metrics -----

def _recbole_list_metrics(top: torch.Tensor, num_items: int, counts: torch.Tensor, tail_ratio: float):
    """RecBole's own ItemCoverage, GiniIndex, AveragePopularity and TailPercentage of a top-K matrix."""
    from collections import Counter

    from recbole.evaluator.metrics import AveragePopularity, GiniIndex, ItemCoverage, TailPercentage

    apply_numpy_aliases()
    config = {"topk": [3, 5], "metric_decimal_place": 8, "tail_ratio": tail_ratio}
    train_items = torch.repeat_interleave(torch.arange(len(counts)), counts)
    data = {"rec.items": top, "data.num_items": num_items, "data.count_items": Counter(train_items.tolist())}
    reference = {}
    for metric in (ItemCoverage(config), GiniIndex(config), AveragePopularity(config), TailPercentage(config)):
        reference.update(metric.calculate_metric(data))
    return reference


@pytest.mark.parametrize("tail_ratio", [0.2, 3])
def test_list_metrics_match_recbole_when_every_item_is_a_candidate(tail_ratio):
    generator = torch.Generator().manual_seed(5)
    scores = torch.rand(25, 41, generator=generator)
    scores[:, 0] = float("-inf")
    counts = torch.randint(0, 8, (41,), generator=generator)
    counts[0] = 0
    accumulator = GroupMetricAccumulator(torch.zeros(41, dtype=torch.long), ["all"], topk=[3, 5],
                                         metrics=["ItemCoverage", "GiniIndex", "AveragePopularity", "TailPercentage"],
                                         item_counts=counts, tail_ratio=tail_ratio)
    accumulator.update(scores[:10], torch.tensor([0]), torch.tensor([1]))
    accumulator.update(scores[10:], torch.tensor([0]), torch.tensor([2]))
    ours = accumulator.list_result(decimals=8)
    # RecBole's item set is every item it counts; the plugin's is the 40 candidates (PAD is never one).
    reference = _recbole_list_metrics(torch.topk(scores, 5, dim=1).indices, 40, counts, tail_ratio)
    assert list(ours) == [f"{m}@{k}" for m in ("itemcoverage", "giniindex", "averagepopularity", "tailpercentage")
                          for k in (3, 5)]
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_list_metrics_count_the_candidates_of_the_scope():
    # Items 1..6; candidates 1..4; items 1, 2 complete (group 0), 3, 4 missing one modality (group 1).
    item_group = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    candidates = torch.tensor([False, True, True, True, True, False, False])
    counts = torch.tensor([0, 5, 0, 1, 2, 9, 9])  # item 2 is new: no training interactions
    new_items = torch.tensor([False, False, True, False, False, False, False])
    accumulator = GroupMetricAccumulator(item_group, ["complete", "missing_1"], topk=[2],
                                         metrics=["Recall", "ItemCoverage", "GiniIndex", "AveragePopularity",
                                                  "TailPercentage"],
                                         candidate_items=candidates, item_counts=counts, new_items=new_items,
                                         tail_ratio=1.5)
    scores = restrict_to_candidates(torch.tensor([[0.0, 9, 8, 1, 1, 5, 5], [0.0, 9, 1, 8, 1, 5, 5],
                                                  [0.0, 9, 8, 1, 1, 5, 5]]), candidates)
    accumulator.update(scores, torch.tensor([0, 1, 2]), torch.tensor([1, 3, 4]))  # top-2: [1,2], [1,3], [1,2]
    overall = accumulator.list_result(decimals=8)
    assert overall["itemcoverage@2"] == pytest.approx(3 / 4)  # item 4 is never shown; 5, 6 are no candidates
    # Shown 3, 2, 1, 0 times: sorted (0, 1, 2, 3), Gini = sum((2i - n - 1) P_i) / (n sum P) = 10 / 24.
    assert overall["giniindex@2"] == pytest.approx(10 / 24)
    assert overall["averagepopularity@2"] == pytest.approx((3 * 5 + 1 * 1) / 6)
    # RecBole's long tail at tail_ratio 1.5: items with 1 training interaction at most, but some: item 3 only.
    assert overall["tailpercentage@2"] == pytest.approx(1 / 6)
    assert accumulator.new_item_share(decimals=8) == {"new_item_share@2": pytest.approx(2 / 6),
                                                      "candidate_share": 0.25}
    groups = accumulator.result(decimals=8)
    assert groups["complete"]["itemcoverage@2"] == 1.0 and groups["missing_1"]["itemcoverage@2"] == 0.5
    assert groups["complete"]["giniindex@2"] == pytest.approx(gini_index(torch.tensor([3.0, 2.0])))
    assert groups["missing_1"]["giniindex@2"] == pytest.approx(0.5)  # (1, 0): one item takes every slot
    assert "averagepopularity@2" not in groups["complete"]  # popularity has no group version


def test_a_group_never_shown_has_coverage_zero_and_no_gini():
    accumulator = GroupMetricAccumulator(torch.tensor([0, 0, 1]), ["complete", "missing_1"], topk=[1],
                                         metrics=["ItemCoverage", "GiniIndex"])
    accumulator.update(torch.tensor([[float("-inf"), 2.0, 1.0]]), torch.tensor([0, 0]), torch.tensor([1, 2]))
    result = accumulator.result()
    assert result["missing_1"]["itemcoverage@1"] == 0.0 and "giniindex@1" not in result["missing_1"]


def test_long_tail_is_recboles():
    counts = torch.tensor([0, 4, 1, 1, 0, 7, 2, 1, 3, 9, 5])
    # Ratio: the 30% of the 9 items with interactions (2 of them) with the fewest, ties by id: items 2 and 3.
    assert torch.nonzero(long_tail_items(counts, 0.3)).squeeze(1).tolist() == [2, 3]
    # Count: items with 1 or 2 interactions; new items (0) are never in the tail.
    assert torch.nonzero(long_tail_items(counts, 2)).squeeze(1).tolist() == [2, 3, 6, 7]
    assert long_tail_items(counts, None).sum() == 1  # RecBole's default share, 0.1, and at least one item


def test_popularity_metrics_need_the_training_counts():
    with pytest.raises(ValueError, match="AveragePopularity"):
        GroupMetricAccumulator(torch.zeros(3, dtype=torch.long), ["all"], topk=[1], metrics=["AveragePopularity"])


def test_depth_limited_tie_break_jitters_only_rows_whose_top_is_not_unique():
    distinct = torch.tensor([[5.0, 4.0, 3.0, 1.0, 1.0]])  # the tie lies below the top 2 (+1)
    assert torch.equal(break_ties_at_random(distinct, torch.Generator().manual_seed(0), depth=2), distinct)
    tied = torch.tensor([[5.0, 4.0, 3.0, 1.0, 1.0], [2.0, 2.0, 2.0, 0.0, -1.0]])
    broken = break_ties_at_random(tied, torch.Generator().manual_seed(0), depth=2)
    assert broken.dtype == torch.float64 and torch.equal(broken[0], tied[0].double())  # row 0 keeps its scores
    assert len(set(broken[1, :3].tolist())) == 3 and broken[1, :3].min() > broken[1, 3]  # row 1's tie is broken
    winners = torch.stack([break_ties_at_random(torch.zeros(1, 5), torch.Generator().manual_seed(s), depth=1)
                           .argmax(dim=1) for s in range(2000)]).view(-1)
    assert torch.all((torch.bincount(winners, minlength=5).double() - 400).abs() < 80)


def test_ranking_with_random_ties_returns_the_top_of_the_scores_it_returns():
    from recbole_milk.evaluation import rank_with_random_ties

    scores = torch.tensor([[5.0, 4.0, 3.0, 1.0, 1.0], [2.0, 2.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    broken, top = rank_with_random_ties(scores, torch.Generator().manual_seed(1), depth=2)
    assert torch.equal(top, torch.topk(broken, 2, dim=1).indices)
    assert top[0].tolist() == [0, 1] and set(top[1].tolist()) <= {0, 1, 2}
