"""Hostile dataset files: the plugin either runs correctly on them or stops with an error naming the file and fix."""
import json
import math

import numpy as np
import pytest
import torch
from fixtures import toy_config, write_toy_dataset
from recbole.data.interaction import Interaction
from reliability_support import feature_path, folder, inter_rows, rewrite_inter

from recbole_milk.data.dataset import ROLE_TEST, ROLE_VALID, ROLE_WARM, DataError
from recbole_milk.data.utils import create_dataset, data_preparation
from recbole_milk.model.general_recommender.milk import MILK
from recbole_milk.quick_start import run_recbole_milk

QUICK = {"epochs": 2, "eval_step": 1}


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data")


def prepared(config_dict, model="MILK", **overrides):
    config = toy_config(config_dict, model=model, **overrides)
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def ids_of(dataset, tokens):
    return torch.tensor([dataset.field2token_id["item_id"][str(t)] for t in tokens])


def assert_sane_metrics(result):
    for metrics in (result["best_valid_result"], result["test_result"]):
        assert metrics and all(0.0 <= value <= 1.0 and math.isfinite(value) for value in metrics.values())


def write_split(tmp_path, valid, test):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"valid": [str(t) for t in valid], "test": [str(t) for t in test]}))
    return str(path)


# ----- item and user tokens -----

def test_string_item_and_user_tokens_train_through_an_item_row_file(toy, tmp_path):
    rewrite_inter(toy, lambda rows: [[f"user-{u}", f"clip/{i}.mp4", *rest] for u, i, *rest in rows])
    with pytest.raises(DataError, match="'clip/.*item_row_file"):
        create_dataset(toy_config(toy))
    (folder(toy) / "rows.tsv").write_text("".join(f"clip/{i}.mp4\t{i}\n" for i in range(50)))
    config, dataset, _ = prepared(toy, item_row_file="rows.tsv")
    visual = np.load(feature_path(toy, "visual"))
    item = dataset.field2token_id["item_id"]["clip/17.mp4"]
    if dataset.item_availability[item, 0]:
        assert torch.equal(dataset.item_features[0][item], torch.from_numpy(visual[17]))
    assert_sane_metrics(run_recbole_milk("MILK", "toy", config_dict=dict(toy, item_row_file="rows.tsv", **QUICK)))


def test_non_contiguous_item_ids_read_their_own_feature_rows(tmp_path):
    toy = write_toy_dataset(tmp_path / "data", extra_rows=50 * 17)
    rewrite_inter(toy, lambda rows: [[u, str(int(i) * 17 + 3), *rest] for u, i, *rest in rows])
    config, dataset, _ = prepared(toy, missing_setting="FTFT")
    visual = np.load(feature_path(toy, "visual"))
    tokens = dataset.field2id_token["item_id"][1:].astype(int)
    assert sorted(tokens) == [i * 17 + 3 for i in range(50)]
    assert torch.equal(dataset.item_features[0][1:], torch.from_numpy(visual[tokens]))
    assert_sane_metrics(run_recbole_milk("MILK", "toy", config_dict=dict(toy, **QUICK)))


def test_duplicate_interactions_count_once_as_positives_and_never_leak(toy):
    rows = inter_rows(toy)
    rewrite_inter(toy, lambda rows: rows + rows[: len(rows) // 2])
    config, dataset, (train, valid, test) = prepared(toy)
    assert len(dataset) == len(rows) + len(rows) // 2
    for loader, role in ((valid, ROLE_VALID), (test, ROLE_TEST)):
        positives = loader.uid2positive_item
        for user_positives in positives:
            if user_positives is not None:
                assert len(torch.unique(user_positives)) == len(user_positives)
                assert (dataset.item_role[user_positives] == role).all()
    batch = next(iter(train))
    assert (dataset.item_role[batch["neg_item_id"]] == ROLE_WARM).all()
    assert_sane_metrics(run_recbole_milk("MILK", "toy", config_dict=dict(toy, **QUICK)))


# ----- missing modalities -----

def test_items_missing_every_modality_are_scored_from_imputed_content(toy, tmp_path):
    split = write_split(tmp_path, valid=range(0, 5), test=range(5, 10))
    for modality in toy["modalities"]:
        raw = np.load(feature_path(toy, modality))
        raw[[5, 7, 30]] = np.nan  # two test items and one warm item lose everything
        np.save(feature_path(toy, modality), raw)
    for fusion in ("all", "available"):
        config, dataset, (train, _, _) = prepared(toy, cold_item_file=split, fusion=fusion)
        blind = ids_of(dataset, [5, 7, 30])
        assert not dataset.item_availability[blind].any()
        assert (dataset.item_group[blind] == 2).all() and dataset.item_group_names[2] == "missing_2"
        for m, fill in enumerate(dataset.imputation_values):
            assert torch.equal(dataset.item_features[m][blind], fill.expand(3, -1))
        model = MILK(config, train._dataset).eval()
        representations = model.item_representations()[blind]
        from_fill = model.encode_items([torch.full((3, f.shape[0]), float("nan")) for f in dataset.imputation_values],
                                       torch.zeros(3, 2, dtype=torch.bool))
        assert torch.isfinite(representations).all()
        assert torch.allclose(representations, from_fill, atol=1e-6)
        scores = model.full_sort_predict(Interaction({"user_id": torch.arange(1, dataset.user_num)}))
        assert torch.isfinite(scores).all()
    result = run_recbole_milk("MILK", "toy", config_dict=dict(toy, cold_item_file=split, **QUICK))
    assert_sane_metrics(result)


def test_a_modality_missing_for_every_item_is_a_clear_error(toy):
    np.save(feature_path(toy, "acoustic"), np.full((50, 6), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match=r"'acoustic'.*acoustic_feat\.npy.*missing for every item.*remove it"):
        create_dataset(toy_config(toy))


def test_a_modality_missing_for_every_warm_item_needs_zero_imputation(toy, tmp_path):
    split = write_split(tmp_path, valid=range(0, 5), test=range(5, 10))
    raw = np.load(feature_path(toy, "acoustic"))
    raw[10:] = np.nan  # only new items have audio
    np.save(feature_path(toy, "acoustic"), raw)
    with pytest.raises(ValueError, match="'acoustic' is missing for every warm item.*imputation: zero"):
        create_dataset(toy_config(toy, cold_item_file=split))
    dataset = create_dataset(toy_config(toy, cold_item_file=split, imputation="zero"))
    assert torch.equal(dataset.imputation_values[1], torch.zeros(6))


# ----- feature files that do not match the items -----

def test_extra_feature_rows_and_rows_of_unknown_items_never_enter_the_data(tmp_path):
    toy = write_toy_dataset(tmp_path / "data", extra_rows=20)
    for modality in toy["modalities"]:
        raw = np.load(feature_path(toy, modality))
        raw[50:] = 1e6  # rows of items that never occur: they must not move the imputation mean
        np.save(feature_path(toy, modality), raw)
    (folder(toy) / "rows.tsv").write_text("".join(f"{i}\t{i}\n" for i in range(70)) + "ghost-item\t3\n")
    config, dataset, _ = prepared(toy, item_row_file="rows.tsv")
    assert dataset.item_num == 51
    for m, modality in enumerate(toy["modalities"]):
        raw = torch.from_numpy(np.load(feature_path(toy, modality)))
        tokens = dataset.field2id_token["item_id"][1:].astype(int)
        warm = (dataset.item_role[1:] == ROLE_WARM) & dataset.item_availability[1:, m]
        expected = raw[tokens][warm].double().mean(dim=0).float()
        assert torch.allclose(dataset.imputation_values[m], expected) and dataset.imputation_values[m].abs().max() < 10


def test_feature_file_with_fewer_rows_than_items_names_the_item(toy):
    np.save(feature_path(toy, "visual"), np.load(feature_path(toy, "visual"))[:30])
    with pytest.raises(DataError, match=r"visual_feat\.npy.*has 30 rows, but item '\d+' needs row"):
        create_dataset(toy_config(toy))


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_feature_values_name_the_file_row_and_item(toy, value):
    raw = np.load(feature_path(toy, "acoustic"))
    raw[21, 3] = value
    np.save(feature_path(toy, "acoustic"), raw)
    with pytest.raises(DataError, match=r"acoustic_feat\.npy.*row 21 \(item '21'\) has infinite values"):
        create_dataset(toy_config(toy))


def test_huge_finite_feature_values_keep_their_direction_in_milk(toy):
    raw = np.load(feature_path(toy, "visual"))
    raw[:25] *= 1e30  # float32 squares overflow: a naive L2 norm turns these rows into zero vectors
    np.save(feature_path(toy, "visual"), raw)
    config, dataset, (train, _, _) = prepared(toy, missing_setting="FTFT")
    model = MILK(config, train._dataset)
    ids = ids_of(dataset, range(25))
    prepared_rows = model.item_feature_0[ids]
    expected = torch.nn.functional.normalize(torch.from_numpy(raw[:25]).double(), dim=1).float()
    assert torch.allclose(prepared_rows, expected) and (prepared_rows.norm(dim=1) > 0.99).all()


def test_a_feature_file_that_is_not_a_matrix_names_the_file(toy):
    feature_path(toy, "visual").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match=r"visual_feat\.npy.*not a readable \.npy"):
        create_dataset(toy_config(toy))


# ----- interaction files -----

def test_an_inter_file_with_only_a_header_is_a_clear_error(toy):
    rewrite_inter(toy, lambda rows: [])
    with pytest.raises(DataError, match=r"toy\.inter holds no interactions"):
        create_dataset(toy_config(toy))


@pytest.mark.parametrize("header", ["", "user_id\titem_id\trating\ttimestamp"], ids=["empty-file", "untyped"])
def test_an_inter_file_without_a_typed_header_is_a_clear_error(toy, header):
    (folder(toy) / "toy.inter").write_text(header)
    with pytest.raises(DataError, match=r"toy\.inter must start with a RecBole header of name:type columns"):
        create_dataset(toy_config(toy))


def test_filters_that_remove_every_interaction_are_named(toy):
    with pytest.raises(DataError, match=r"filters removed all \d+ interactions of .*toy\.inter.*"
                                        r"user_inter_num_interval = \[1000,inf\)"):
        create_dataset(toy_config(toy, user_inter_num_interval="[1000,inf)"))


def test_users_with_only_warm_items_or_every_warm_item_do_not_stall_training(toy, caplog):
    extra = [["only-warm", "40", "1", "9000"], ["only-warm", "41", "1", "9001"]]
    extra += [["hog", str(i), "1", str(9100 + i)] for i in range(50)]
    rewrite_inter(toy, lambda rows: rows + extra)
    config, dataset, (train, valid, test) = prepared(toy)
    hog = dataset.field2token_id["user_id"]["hog"]
    only_warm = dataset.field2token_id["user_id"]["only-warm"]
    evaluated = set(valid.uid_list.tolist()) | set(test.uid_list.tolist())
    if (dataset.item_role[ids_of(dataset, [40, 41])] == ROLE_WARM).all():
        assert only_warm not in evaluated
    assert hog in evaluated
    with caplog.at_level("WARNING"):
        for batch in train:  # hog has used every warm item: sampling must end, with a warning
            assert (dataset.item_role[batch["neg_item_id"]] == ROLE_WARM).all()
    assert "interacted with every item of the train pool" in caplog.text
    assert_sane_metrics(run_recbole_milk("MILK", "toy", config_dict=dict(toy, **QUICK)))


def test_topk_longer_than_the_item_list_is_a_clear_error_before_training(tmp_path):
    toy = write_toy_dataset(tmp_path / "data", n_users=10, n_items=12, inter_per_user=3)
    with pytest.raises(DataError, match=r"'topk' = \[10, 20\].*only 12 items"):
        run_recbole_milk("MILK", "toy", config_dict=dict(toy, cold_item_ratio=0.4, **QUICK))
    assert not (tmp_path / "data" / "saved").exists() or not any((tmp_path / "data" / "saved").iterdir())
    result = run_recbole_milk("MILK", "toy", config_dict=dict(toy, cold_item_ratio=0.4, topk=[5, 10], **QUICK))
    assert_sane_metrics(result)
