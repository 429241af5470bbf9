"""NewItemDataset: features, availability, missing-modality simulation, imputation and the new-item split."""
import json
import math

import numpy as np
import pytest
import torch
from fixtures import toy_config, write_toy_dataset

from recbole_milk.data.dataset import (
    ROLE_PAD,
    ROLE_TEST,
    ROLE_VALID,
    ROLE_WARM,
    DataError,
    NewItemDataset,
)
from recbole_milk.options import ConfigError


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data")


def build(config_dict, **overrides):
    return NewItemDataset(toy_config(config_dict, **overrides))


def tokens_of(dataset, role):
    return set(dataset.field2id_token["item_id"][(dataset.item_role == role).numpy()].tolist())


def feature_file(config_dict, modality):
    return f"{config_dict['data_path']}/{config_dict['dataset']}/{config_dict['modalities'][modality]}"


# ----- split -----

def test_warm_valid_and_test_items_are_disjoint_and_cover_every_item(toy):
    dataset = build(toy)
    warm, valid, test = (tokens_of(dataset, r) for r in (ROLE_WARM, ROLE_VALID, ROLE_TEST))
    assert not (warm & valid) and not (warm & test) and not (valid & test)
    assert warm | valid | test == {str(i) for i in range(50)}
    assert dataset.item_role[0] == ROLE_PAD


def test_split_sizes_follow_cold_item_ratio_and_valid_share(toy):
    dataset = build(toy, cold_item_ratio=0.4, cold_valid_share=0.25)
    assert len(tokens_of(dataset, ROLE_VALID)) == 5  # round(0.25 * 20)
    assert len(tokens_of(dataset, ROLE_TEST)) == 15
    assert len(tokens_of(dataset, ROLE_WARM)) == 30


def test_training_interactions_hold_warm_items_only(toy):
    dataset = build(toy)
    train, valid, test = dataset.build()
    for part, role in ((train, ROLE_WARM), (valid, ROLE_VALID), (test, ROLE_TEST)):
        assert len(part) > 0
        assert (dataset.item_role[part.inter_feat["item_id"]] == role).all()
    assert len(train) + len(valid) + len(test) == len(dataset)


def test_same_seed_gives_the_same_split_and_masks_another_seed_differs(toy):
    first, again = build(toy, seed=5), build(toy, seed=5)
    other = build(toy, seed=6)
    assert torch.equal(first.item_role, again.item_role)
    assert torch.equal(first.item_availability, again.item_availability)
    assert not torch.equal(first.item_role, other.item_role)


def test_split_seed_fixes_the_split_whatever_the_run_seed(toy):
    assert torch.equal(build(toy, seed=1, split_seed=9).item_role, build(toy, seed=2, split_seed=9).item_role)


def test_missing_setting_does_not_move_the_split_and_mtmt_keeps_ftmt_test_masks(toy):
    ftft, ftmt, mtmt = (build(toy, missing_setting=s) for s in ("FTFT", "FTMT", "MTMT"))
    assert torch.equal(ftft.item_role, ftmt.item_role) and torch.equal(ftmt.item_role, mtmt.item_role)
    new = (ftmt.item_role == ROLE_VALID) | (ftmt.item_role == ROLE_TEST)
    assert torch.equal(ftmt.item_availability[new], mtmt.item_availability[new])
    assert ftft.item_availability[1:].all()


def test_cold_item_file_fixes_the_split_and_export_split_round_trips(toy, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"valid": [3, 4, 5], "test": ["10", "11"]}))
    dataset = build(toy, cold_item_file=str(split_file))
    assert tokens_of(dataset, ROLE_VALID) == {"3", "4", "5"}
    assert tokens_of(dataset, ROLE_TEST) == {"10", "11"}
    exported = tmp_path / "out" / "exported.json"
    dataset.export_split(str(exported))
    content = json.loads(exported.read_text())
    assert sorted(content) == ["test", "valid", "warm"] and len(content["warm"]) == 45
    again = build(toy, cold_item_file=str(exported))
    assert torch.equal(again.item_role, dataset.item_role)


def test_cold_item_file_with_unknown_tokens_names_the_file(toy, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"valid": [3, 999], "test": [10]}))
    with pytest.raises(DataError, match=r"split\.json.*'999'"):
        build(toy, cold_item_file=str(split_file))


def test_cold_item_file_listing_an_item_twice_is_rejected(toy, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"valid": [3, 4], "test": [4, 10]}))
    with pytest.raises(DataError, match="both as valid and test"):
        build(toy, cold_item_file=str(split_file))


def test_fewer_than_two_warm_items_is_a_clear_error(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", n_users=5, n_items=4, inter_per_user=2)
    with pytest.raises(DataError, match="at least 2.*cold_item_ratio"):
        build(config_dict, cold_item_ratio=0.9)


def test_a_split_without_test_items_is_a_clear_error(toy):
    with pytest.raises(DataError, match="no test items"):
        build(toy, cold_item_ratio=0.02)


@pytest.mark.parametrize("key, value", [("cold_item_ratio", 1.0), ("test_missing_ratio", -0.1),
                                        ("train_missing_ratio", 1.0), ("cold_valid_share", 0.0)])
def test_ratios_outside_their_range_are_rejected_at_config_time(toy, key, value):
    with pytest.raises(ConfigError, match=key):
        toy_config(toy, **{key: value})


def test_random_split_keeps_every_item_warm_for_warm_experiments(toy):
    dataset = build(toy, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
                                    "mode": "full"})
    assert (dataset.item_role[1:] == ROLE_WARM).all()
    train, valid, test = dataset.build()
    assert len(train) + len(valid) + len(test) == len(dataset) and len(valid) > 0


# ----- features -----

def test_features_are_float32_rows_of_the_item_token_with_a_zero_pad_row(toy):
    dataset = build(toy, missing_setting="FTFT")
    raw = np.load(feature_file(toy, "visual"))
    assert dataset.modality_names == ["visual", "acoustic"]
    assert [tuple(f.shape) for f in dataset.item_features] == [(51, 8), (51, 6)]
    assert all(f.dtype == torch.float32 for f in dataset.item_features)
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    assert torch.allclose(dataset.item_features[0][1:], torch.from_numpy(raw[tokens]))
    assert (dataset.item_features[0][0] == 0).all() and not dataset.item_availability[0].any()


def test_float16_features_are_cast_before_the_mean(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", feature_dtype="float16")
    path = feature_file(config_dict, "visual")
    raw = np.load(path)
    raw[:] = 60000  # a float16 sum of these overflows
    np.save(path, raw)
    dataset = build(config_dict, missing_setting="FTMT")
    assert dataset.item_features[0].dtype == torch.float32
    assert torch.allclose(dataset.imputation_values[0], torch.full((8,), 60000.0))


def test_item_row_file_maps_tokens_to_feature_rows(toy):
    folder = f"{toy['data_path']}/{toy['dataset']}"
    # Reverse order: token t lives in row 49 - t.
    with open(f"{folder}/rows.tsv", "w") as handle:
        handle.write("item\trow\n" + "".join(f"{t}\t{49 - t}\n" for t in range(50)))
    dataset = build(toy, item_row_file="rows.tsv", missing_setting="FTFT")
    raw = np.load(feature_file(toy, "acoustic"))
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    assert torch.allclose(dataset.item_features[1][1:], torch.from_numpy(raw[49 - tokens]))


def test_item_row_file_without_some_item_names_the_file(toy):
    folder = f"{toy['data_path']}/{toy['dataset']}"
    with open(f"{folder}/rows.tsv", "w") as handle:
        handle.write("".join(f"{t}\t{t}\n" for t in range(40)))
    with pytest.raises(DataError, match=r"rows\.tsv.*no row for 10 items"):
        build(toy, item_row_file="rows.tsv")


def test_dataset_without_modalities_has_empty_content(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", n_modalities=0)
    dataset = build(config_dict)
    assert dataset.modality_names == [] and dataset.item_features == [] and dataset.imputation_values == []
    assert dataset.item_availability.shape == (51, 0)
    assert (dataset.item_group == 0).all() and dataset.item_group_names == ["complete"]
    assert (dataset.item_role == ROLE_TEST).sum() == 5


# ----- availability, simulation, imputation -----

def test_all_nan_rows_are_really_missing_and_stay_missing(toy):
    path = feature_file(toy, "visual")
    raw = np.load(path)
    raw[[2, 7]] = np.nan
    np.save(path, raw)
    dataset = build(toy, missing_setting="MTMT", train_missing_ratio=0.0, test_missing_ratio=0.0)
    ids = dataset.token2id("item_id", ["2", "7"])
    assert not dataset.item_availability[ids, 0].any() and dataset.item_availability[ids, 1].all()
    assert int((dataset.item_group == 1).sum()) == 2
    assert torch.isfinite(dataset.item_features[0]).all()


def test_mask_file_marks_missing_rows(toy):
    folder = f"{toy['data_path']}/{toy['dataset']}"
    mask = np.ones(50, dtype=np.int64)
    mask[[0, 1, 2]] = 0
    np.save(f"{folder}/acoustic_mask.npy", mask)
    dataset = build(toy, missing_setting="FTFT", modality_mask_files={"acoustic": "acoustic_mask.npy"})
    ids = dataset.token2id("item_id", ["0", "1", "2"])
    assert not dataset.item_availability[ids, 1].any()
    assert int(dataset.item_availability[1:, 1].sum()) == 47


def test_simulated_masks_follow_the_configured_ratios(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", n_users=60, n_items=600, inter_per_user=12)
    dataset = build(config_dict, missing_setting="MTMT")
    roles, group = dataset.item_role, dataset.item_group
    for role_set, ratio in (((ROLE_VALID, ROLE_TEST), 0.5), ((ROLE_WARM,), 0.3)):
        members = torch.isin(roles, torch.tensor(role_set))
        n = int(members.sum())
        missing = int((group[members] > 0).sum())
        assert abs(missing - ratio * n) <= 3 * math.sqrt(n * ratio * (1 - ratio)) + 1
        assert int(group[members].max()) == 1


def test_missing_count_distribution_gives_the_10_45_45_scenario(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", n_items=200, n_modalities=3)
    dataset = build(config_dict, missing_setting="FTMT", test_missing_ratio=0.9, missing_count_probs=[0.5, 0.5])
    new = dataset.item_role >= ROLE_VALID
    counts = torch.bincount(dataset.item_group[new], minlength=4).tolist()
    assert counts == [4, 18, 18, 0]  # 40 new items
    assert dataset.item_group_names == ["complete", "missing_1", "missing_2", "missing_3"]


def test_mean_imputation_equals_the_mean_of_available_warm_rows(toy):
    dataset = build(toy, missing_setting="MTMT")
    raw = np.load(feature_file(toy, "visual")).astype(np.float64)
    tokens = dataset.field2id_token["item_id"].copy()
    rows = [int(tokens[i]) for i in range(1, dataset.item_num)
            if dataset.item_role[i] == ROLE_WARM and dataset.item_availability[i, 0]]
    expected = raw[rows].mean(axis=0)
    assert np.allclose(dataset.imputation_values[0].numpy(), expected, atol=1e-5)
    missing_ids = torch.nonzero(~dataset.item_availability[1:, 0]).squeeze(1) + 1
    assert len(missing_ids) > 0
    assert torch.allclose(dataset.item_features[0][missing_ids], dataset.imputation_values[0].expand(len(missing_ids), -1))


def test_zero_imputation_fills_missing_rows_with_zeros(toy):
    dataset = build(toy, missing_setting="FTMT", imputation="zero")
    missing_ids = torch.nonzero(~dataset.item_availability[1:].all(dim=1)).squeeze(1) + 1
    assert len(missing_ids) == 5
    for m, feat in enumerate(dataset.item_features):
        rows = missing_ids[~dataset.item_availability[missing_ids, m]]
        assert (feat[rows] == 0).all()


def test_new_items_never_enter_the_imputation_mean(toy):
    base = build(toy, missing_setting="FTFT")
    path = feature_file(toy, "visual")
    raw = np.load(path)
    new_tokens = base.field2id_token["item_id"][(base.item_role >= ROLE_VALID).numpy()].astype(int)
    raw[new_tokens] = 1e6
    np.save(path, raw)
    shifted = build(toy, missing_setting="FTFT")
    assert torch.allclose(base.imputation_values[0], shifted.imputation_values[0])


def test_missing_file_fixes_the_masks_and_export_missing_round_trips(toy, tmp_path):
    simulated = build(toy, missing_setting="MTMT")
    exported = tmp_path / "missing.json"
    simulated.export_missing(str(exported))
    reloaded = build(toy, missing_setting="MTMT", missing_file=str(exported), seed=99, split_seed=2023)
    assert torch.equal(reloaded.item_availability, simulated.item_availability)
    only_test = build(toy, missing_setting="FTMT", missing_file=str(exported), split_seed=2023)
    assert only_test.item_availability[only_test.item_role == ROLE_WARM].all()


# ----- bad input -----

def test_missing_feature_file_names_the_file_and_the_option(toy):
    toy["modalities"]["acoustic"] = "nope.npy"
    with pytest.raises(DataError, match=r"nope\.npy.*modalities\.acoustic"):
        build(toy)


def test_feature_file_with_too_few_rows_names_the_file(toy):
    path = feature_file(toy, "visual")
    np.save(path, np.load(path)[:45])
    with pytest.raises(DataError, match=r"visual_feat\.npy.*45 rows.*needs row"):
        build(toy)


def test_extra_feature_rows_are_allowed(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", extra_rows=7)
    assert build(config_dict).item_features[0].shape == (51, 8)


def test_partially_nan_row_names_the_file_and_row(toy):
    path = feature_file(toy, "acoustic")
    raw = np.load(path)
    raw[12, 0] = np.nan
    np.save(path, raw)
    with pytest.raises(DataError, match=r"acoustic_feat\.npy.*row 12.*some NaN"):
        build(toy)


def test_a_modality_missing_for_every_item_is_rejected(toy):
    path = feature_file(toy, "acoustic")
    np.save(path, np.full_like(np.load(path), np.nan))
    with pytest.raises(DataError, match="'acoustic'.*missing for every item"):
        build(toy)


def test_mask_file_for_an_unknown_modality_is_rejected_at_config_time(toy):
    with pytest.raises(ConfigError, match="modality_mask_files"):
        toy_config(toy, modality_mask_files={"textual": "mask.npy"})


def test_missing_count_distribution_longer_than_the_modalities_is_rejected(toy):
    with pytest.raises(ConfigError, match="missing_count_probs.*at most 2 entries"):
        build(toy, missing_count_probs=[0.1, 0.2, 0.7])


def test_non_numeric_item_tokens_need_an_item_row_file(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data")
    inter = tmp_path / "data" / "toy" / "toy.inter"
    lines = inter.read_text().splitlines()
    rewritten = [lines[0]] + [f"{u}\titem{i}\t{r}\t{t}" for u, i, r, t in (line.split("\t") for line in lines[1:])]
    inter.write_text("\n".join(rewritten) + "\n")
    with pytest.raises(DataError, match="item_row_file"):
        build(config_dict)
