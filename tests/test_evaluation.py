import math

import pytest
import torch

from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.evaluation import (
    GroupMetricAccumulator,
    break_ties_at_random,
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
    from recbole.evaluator.metrics import NDCG, Recall

    apply_numpy_aliases()

    torch.manual_seed(3)
    scores = torch.rand(20, 30)
    positive = torch.rand(20, 30) < 0.2
    positive[:, 0] = False
    positive[torch.arange(20), torch.randint(1, 30, (20,))] = True
    positive_u, positive_i = positive.nonzero(as_tuple=True)
    accumulator = GroupMetricAccumulator(torch.zeros(30, dtype=torch.long), ["all"], topk=[5, 10],
                                         metrics=["recall", "ndcg"])
    accumulator.update(scores, positive_u, positive_i)
    ours = accumulator.result(decimals=8)["all"]

    top = torch.topk(scores, 10, dim=1).indices
    hits = positive.gather(1, top).int()
    struct = torch.cat([hits, positive.sum(1, keepdim=True).int()], dim=1)
    config = {"topk": [5, 10], "metric_decimal_place": 8}
    reference = {}
    for metric in (Recall(config), NDCG(config)):
        reference.update(metric.calculate_metric({"rec.topk": struct}))
    for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6)
