"""Missing-modality simulation and imputation statistics (milk-spec.md section 3)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recbole_milk.data.missing import (
    derived_rng,
    imputation_value,
    impute,
    missing_ratios,
    read_missing_file,
    simulate_missing,
    write_missing_file,
)


def test_settings_default_to_the_paper_ratios():
    assert missing_ratios("FTFT") == (0.0, 0.0)
    assert missing_ratios("FTMT") == (0.5, 0.0)
    assert missing_ratios("MTMT") == (0.5, 0.3)


def test_explicit_ratios_override_the_setting():
    assert missing_ratios("FTMT", test_ratio=0.9) == (0.9, 0.0)
    assert missing_ratios("MTMT", train_ratio=0.1) == (0.5, 0.1)
    assert missing_ratios("FTFT", test_ratio=0.2, train_ratio=0.4) == (0.2, 0.4)


@settings(max_examples=40, deadline=None)
@given(n_items=st.integers(1, 400), n_modalities=st.integers(1, 4), ratio=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_share_of_affected_items_is_the_requested_ratio(n_items, n_modalities, ratio, seed):
    missing = simulate_missing(n_items, n_modalities, ratio, np.random.default_rng(seed))
    affected = int(missing.any(axis=1).sum())
    assert affected == math.floor(ratio * n_items + 0.5)
    # Also within a binomial tolerance of the expectation, as a user would check it.
    assert abs(affected - ratio * n_items) <= 3 * math.sqrt(n_items * 0.25) + 1


def test_by_default_an_affected_item_misses_exactly_one_modality():
    missing = simulate_missing(500, 3, 0.5, np.random.default_rng(0))
    per_item = missing.sum(axis=1)
    assert set(np.unique(per_item)) == {0, 1}


def test_the_missing_modality_is_chosen_uniformly():
    missing = simulate_missing(3000, 2, 1.0, np.random.default_rng(1))
    share_first = missing[:, 0].mean()
    # Binomial(3000, 0.5): 4 standard deviations is about 0.037.
    assert abs(share_first - 0.5) < 0.04


def test_count_distribution_gives_exactly_10_45_45_for_three_modalities():
    missing = simulate_missing(200, 3, 0.9, np.random.default_rng(2), count_probs=[0.5, 0.5])
    per_item = missing.sum(axis=1)
    assert np.bincount(per_item, minlength=4).tolist() == [20, 90, 90, 0]


def test_an_item_may_miss_every_modality():
    missing = simulate_missing(10, 2, 1.0, np.random.default_rng(0), count_probs=[0.0, 1.0])
    assert missing.all()


def test_same_seed_same_masks_other_seed_different():
    first = simulate_missing(300, 2, 0.5, derived_rng(7, "test_missing"))
    again = simulate_missing(300, 2, 0.5, derived_rng(7, "test_missing"))
    other = simulate_missing(300, 2, 0.5, derived_rng(8, "test_missing"))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_named_streams_of_one_seed_are_independent():
    split = derived_rng(2023, "split").random(20)
    masks = derived_rng(2023, "test_missing").random(20)
    assert not np.allclose(split, masks)


def test_mean_imputation_averages_only_available_warm_rows():
    features = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [100.0, 100.0], [50.0, -50.0], [5.0, 6.0]])
    available = torch.tensor([False, True, True, False, True, False])
    warm = torch.tensor([False, True, True, True, False, True])
    # Rows 1 and 2 are warm and available; row 3 is warm but missing, row 4 available but new.
    value = imputation_value(features, available, warm, "mean", "visual")
    assert torch.allclose(value, torch.tensor([2.0, 3.0]))
    assert value.dtype == torch.float32


def test_mean_imputation_is_exact_for_float16_scale_values():
    features = torch.full((4, 3), 60000.0)  # near float16's maximum; a float16 sum would overflow to inf
    value = imputation_value(features, torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool), "mean", "v")
    assert torch.isfinite(value).all() and torch.allclose(value, torch.full((3,), 60000.0))


def test_zero_imputation_fills_zeros():
    features = torch.ones(3, 4)
    value = imputation_value(features, torch.tensor([True, False, True]), torch.ones(3, dtype=torch.bool), "zero", "v")
    assert torch.equal(value, torch.zeros(4))


def test_mean_imputation_without_any_available_warm_row_names_the_modality():
    features = torch.ones(3, 2)
    with pytest.raises(ValueError, match="'acoustic'.*imputation: zero"):
        imputation_value(features, torch.tensor([False, False, True]), torch.tensor([True, True, False]),
                         "mean", "acoustic")


def test_impute_replaces_only_missing_rows_in_place():
    features = torch.arange(6.0).reshape(3, 2)
    filled = impute(features, torch.tensor([True, False, True]), torch.tensor([9.0, 9.0]))
    assert filled.tolist() == [[0.0, 1.0], [9.0, 9.0], [4.0, 5.0]]
    assert filled is features  # no second copy of a feature table


def test_missing_file_round_trips(tmp_path):
    path = tmp_path / "missing.json"
    write_missing_file(str(path), ["visual", "acoustic"], {
        "test_missing": {"7": np.array([False, True]), "9": np.array([True, True])},
        "train_missing": {"3": np.array([True, False])},
    })
    parsed = read_missing_file(str(path), ["visual", "acoustic"])
    assert parsed == {"test_missing": {"7": [1], "9": [0, 1]}, "train_missing": {"3": [0]}}


def test_missing_file_accepts_single_names_as_in_the_reference_file(tmp_path):
    path = tmp_path / "reference_missing.json"
    path.write_text('{"modalities": ["visual (image_feat.npy)"], "test_missing": {"12": "acoustic"}}')
    assert read_missing_file(str(path), ["visual", "acoustic"]) == {"test_missing": {"12": [1]}, "train_missing": {}}


def test_missing_file_with_an_unknown_modality_names_file_and_fix(tmp_path):
    path = tmp_path / "missing.json"
    path.write_text('{"test_missing": {"1": "textual"}}')
    with pytest.raises(ValueError, match=r"missing\.json.*'textual'.*names of 'modalities'"):
        read_missing_file(str(path), ["visual", "acoustic"])


def test_masks_are_nested_across_ratios_for_one_seed():
    masks = [simulate_missing(400, 2, ratio, derived_rng(5, "test_missing")) for ratio in (0.25, 0.5, 0.75, 1.0)]
    for lower, higher in zip(masks, masks[1:]):
        assert (higher | ~lower).all()  # everything missing at the lower ratio is missing at the higher one
        assert higher.any(axis=1).sum() > lower.any(axis=1).sum()


def test_items_group_by_missing_count_or_by_missing_pattern():
    from recbole_milk.data.missing import missing_groups

    availability = torch.tensor([[False, False], [True, True], [False, True], [True, False], [False, False]])
    group, names = missing_groups(availability, ["visual", "acoustic"], "count")
    assert group.tolist() == [0, 0, 1, 1, 2] and names == ["complete", "missing_1", "missing_2"]
    group, names = missing_groups(availability, ["visual", "acoustic"], "pattern")
    assert group.tolist() == [0, 0, 1, 2, 3]
    assert names == ["complete", "missing_visual", "missing_acoustic", "missing_visual+acoustic"]
