"""Per-pattern score calibration: fitted on validation items only, never lowering the metric it maximises."""
import json

import numpy as np
import pytest
import torch
from fixtures import write_toy_dataset

from recbole_milk.calibration import _metric
from recbole_milk.quick_start import run_recbole_milk


def test_metric_matches_a_hand_computed_ranking():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    positives = torch.tensor([[False, True, False, True], [True, False, False, False]])
    # user 0: positives at ranks 2 and 3 -> DCG 1/log2(3) + 1/log2(4), IDCG 1 + 1/log2(3); user 1: rank 4 > k.
    expected = ((1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3)) + 0.0) / 2
    assert _metric(scores, positives, 3, "ndcg") == pytest.approx(expected)
    assert _metric(scores, positives, 3, "recall") == pytest.approx((2 / 2 + 0 / 1) / 2)


@pytest.fixture
def toy(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=60, n_items=120, seed=3)
    split = {"valid": [str(i) for i in range(0, 12)], "test": [str(i) for i in range(12, 24)]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    config.update(epochs=3, eval_step=1, cold_item_file=str(tmp_path / "split.json"), score_calibration="pattern")
    return config


def test_calibration_is_a_per_pattern_logistic_fit_on_validation(toy):
    result = run_recbole_milk("DUIF", "toy", config_dict=toy)
    fitted = result["calibration"]
    assert fitted["metric"] == "ndcg@10"
    assert fitted["log_loss_fitted"] <= fitted["log_loss_pooled"] + 1e-9  # per-pattern fit never loses to pooled
    assert set(fitted["patterns"]) <= {0, 1, 2} and sum(p["items"] for p in fitted["patterns"].values()) == 12
    assert result["best_valid_result"] == fitted["valid_result"]
    before, after = fitted["valid_result_before"]["ndcg@10"], fitted["valid_result_fitted"]["ndcg@10"]
    assert fitted["kept"] == (after >= before)
    assert fitted["valid_result"]["ndcg@10"] == max(before, after)  # calibration never lowers the valid metric


def test_test_items_do_not_move_the_calibration(toy, tmp_path):
    # split_new: validation ranks validation items only, so the test items cannot move model selection either.
    toy = dict(toy, candidate_pool="split_new")
    first = run_recbole_milk("DUIF", "toy", config_dict=toy)["calibration"]
    for name, file in toy["modalities"].items():
        path = tmp_path / "data" / "toy" / file
        rows = np.load(path)
        rows[12:24] = np.random.default_rng(1).normal(size=rows[12:24].shape) * 10  # the test items' content
        np.save(path, rows)
    second = run_recbole_milk("DUIF", "toy", config_dict=toy)["calibration"]
    assert first["patterns"] == second["patterns"] and first["fitted"] == second["fitted"]


def test_the_logistic_fit_recovers_slopes_and_intercepts_per_pattern():
    from recbole_milk.calibration import _platt

    generator = torch.Generator().manual_seed(0)
    standard = torch.randn(400, 300, generator=generator)
    patterns = torch.arange(300) % 2
    true_slope, true_intercept = torch.tensor([2.0, 1.0]), torch.tensor([-2.0, -3.0])
    probability = torch.sigmoid(standard * true_slope[patterns] + true_intercept[patterns])
    positives = torch.rand(400, 300, generator=generator) < probability
    slope, intercept, pooled, fitted = _platt(standard, positives, patterns, 4)
    assert torch.allclose(slope[:2], true_slope, atol=0.15) and torch.allclose(intercept[:2], true_intercept, atol=0.2)
    assert fitted < pooled


def test_group_ndcg_counts_only_the_groups_positives():
    from recbole_milk.calibration import group_ndcg

    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.1, 0.8, 0.7]])
    positives = torch.tensor([[True, False, True, False], [False, True, False, False]])
    groups = torch.tensor([0, 0, 1, 1])
    overall, per_group = group_ndcg(scores, positives, groups, 3, k=2)
    # user 0: positives at ranks 1 (group 0) and 3 (group 1); user 1: its group-0 positive at rank 4.
    assert overall == pytest.approx((1 / (1 + 1 / np.log2(3)) + 0.0) / 2)
    assert per_group[0] == pytest.approx((1.0 + 0.0) / 2)  # both users have a group-0 positive
    assert per_group[1] == pytest.approx(0.0)  # user 0's group-1 positive is beyond k
    assert torch.isnan(per_group[2])  # no positives in group 2


def _two_group_case(seed=0, gap=3.0):
    """Users who like items of both patterns; pattern-1 items score `gap` lower, but are ranked well among
    themselves."""
    generator = torch.Generator().manual_seed(seed)
    relevance = torch.rand(300, 60, generator=generator)
    positives = relevance > 0.9
    scores = relevance + 0.3 * torch.randn(300, 60, generator=generator)
    patterns = (torch.arange(60) >= 30).long()
    return scores - gap * patterns, positives, patterns


def test_the_floor_lifts_the_incomplete_group_to_it_at_the_least_cost():
    from recbole_milk.calibration import floor_shifts, group_ndcg

    scores, positives, patterns = _two_group_case()
    shifts, found = floor_shifts(scores, positives, patterns, 4, patterns, 3, floor=0.5, k=10)
    assert found["group_ratios_before"][0] < 0.05 and found["met"]
    assert found["group_ratios_after"][0] >= 0.5
    assert shifts[1] > 0 and shifts[0] == 0 and shifts[2:].eq(0).all()  # only the pattern present moves
    # Ratios are over the complete items' NDCG before the shifts.
    _, start = group_ndcg(scores, positives, patterns, 3, 10)
    _, per_group = group_ndcg(scores + shifts[patterns], positives, patterns, 3, 10)
    assert float(per_group[1] / start[0]) == pytest.approx(found["group_ratios_after"][0], abs=1e-4)
    # The gap is closed as far as NDCG gains: the group sits where the ranking no longer separates the patterns.
    assert found["ndcg_after"] > found["ndcg_before"]


def test_a_floor_per_pattern_lifts_a_pattern_that_a_pooled_group_would_hide():
    from recbole_milk.calibration import floor_shifts

    generator = torch.Generator().manual_seed(1)
    relevance = torch.rand(300, 90, generator=generator)
    scores = relevance + 0.3 * torch.randn(300, 90, generator=generator)
    patterns = torch.arange(90) // 30  # 0 complete, 1 and 2 each miss one modality
    scores = scores - 3.0 * (patterns == 1)  # only pattern 1 is buried
    positives = relevance > 0.9
    by_count = (patterns > 0).long()  # item_groups: count pools patterns 1 and 2 in missing_1
    _, pooled = floor_shifts(scores, positives, patterns, 4, by_count, 3, floor=0.3, k=10)
    assert pooled["met"] and pooled["shifts"] == {}  # pattern 2 alone carries the pooled group over 0.3
    shifts, per_pattern = floor_shifts(scores, positives, patterns, 4, patterns, 4, floor=0.3, k=10)
    assert per_pattern["group_ratios_before"][0] < 0.05 and per_pattern["met"]
    assert shifts[1] > 0 and per_pattern["group_ratios_after"][0] >= 0.3
    assert shifts[2] == 0 and 2 not in per_pattern["shifts"]  # a pattern over the floor is not moved


def test_burying_the_complete_items_never_meets_the_floor():
    from recbole_milk.calibration import floor_shifts

    scores, positives, patterns = _two_group_case()
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(2))
    scores = torch.where(patterns.bool(), noise - 3.0, scores)  # incomplete items: no signal at all
    shifts, found = floor_shifts(scores, positives, patterns, 4, patterns, 3, floor=0.9, k=10)
    # Lifting them over every complete item would make the ratio to the complete items' NDCG *after* the shift
    # infinite; against the NDCG before it, noise stays far below the floor.
    assert not found["met"] and found["group_ratios_after"][0] < 0.9 and shifts[1] >= 0


def test_a_ranking_that_meets_the_floor_is_left_alone():
    from recbole_milk.calibration import floor_shifts

    scores, positives, patterns = _two_group_case(gap=0.0)
    shifts, found = floor_shifts(scores, positives, patterns, 4, patterns, 3, floor=0.5, k=10)
    assert found["met"] and found["shifts"] == {} and shifts.eq(0).all()


def test_a_floor_is_kept_when_it_approaches_the_target_even_at_a_validation_cost():
    from recbole_milk.calibration import worth_keeping

    # Uncalibrated, the group misses the floor; Platt scaling alone met it already (before the shifts).
    floor = {"floor": 0.5, "group_ratios_uncalibrated": [0.1, None], "group_ratios_before": [0.6, None],
             "group_ratios_after": [0.6, None]}
    assert worth_keeping({"floor": floor}, before=0.02, fitted=0.018, bigger=True)
    assert not worth_keeping({}, before=0.02, fitted=0.018, bigger=True)
    assert worth_keeping({}, before=0.02, fitted=0.021, bigger=True)
    worse = dict(floor, group_ratios_after=[0.05, None])
    assert not worth_keeping({"floor": worse}, before=0.02, fitted=0.018, bigger=True)


def test_the_floor_needs_pattern_calibration():
    from baseline_helpers import model_defaults

    from recbole_milk.model.general_recommender.duif import DUIF
    from recbole_milk.options import ConfigError, validate_options

    config = dict(model_defaults(DUIF), calibration_min_pattern_ratio=0.5)
    with pytest.raises(ConfigError, match="calibration_min_pattern_ratio.*score_calibration: pattern"):
        validate_options(config, DUIF)
    validate_options(dict(config, score_calibration="pattern"), DUIF)


def test_a_run_with_the_floor_reports_it_and_meets_it_on_validation(toy):
    result = run_recbole_milk("DUIF", "toy", config_dict=dict(toy, calibration_min_pattern_ratio=0.5))
    fitted = result["calibration"]
    floor = fitted["floor"]
    assert floor["floor"] == 0.5 and floor["candidates"] == 24  # all_new: validation and test items ranked
    # Entry p - 1 is missing pattern p. Platt scaling alone leaves pattern 2 below the floor; the shifts lift it.
    assert floor["group_ratios_before"][1] < 0.5 and floor["met"]
    assert all(ratio >= 0.5 for ratio in floor["group_ratios_after"] if ratio is not None)
    # Uncalibrated, pattern 1 misses the floor: calibration is kept although validation NDCG may fall.
    assert floor["group_ratios_uncalibrated"][0] < 0.5 and fitted["kept"]
    assert result["best_valid_result"] == fitted["valid_result_fitted"]
