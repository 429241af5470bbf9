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
