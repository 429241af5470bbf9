"""Evaluation scopes: the warm holdout (per user, seeded, never in training), the scopes' candidates and loaders."""
import numpy as np
import pytest
import torch
from fixtures import toy_config, write_toy_dataset

from recbole_milk.data.dataset import ROLE_PAD, ROLE_TEST, ROLE_VALID, ROLE_WARM, NewItemDataset
from recbole_milk.data.scopes import _holdout_counts, scope_item_pool, warm_holdout_pairs
from recbole_milk.data.utils import create_dataset, scoped_data_preparation
from recbole_milk.errors import ConfigError, DataError

SCOPES = ["new", "warm", "all"]


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data", n_users=40, n_items=60, inter_per_user=12)


def pairs(dataset):
    inter = dataset.inter_feat
    return set(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))


def prepared(config_dict, **overrides):
    config = toy_config(config_dict, **overrides)
    dataset = NewItemDataset(config)
    return config, dataset, scoped_data_preparation(config, dataset)


# ----- the holdout -----

@pytest.mark.parametrize("ratios", [(0.1, 0.1), (0.2, 0.1), (0.05, 0.3), (0.45, 0.45)])
def test_holdout_sizes_are_recboles_rs_split_per_user(ratios):
    from recbole.data.dataset import Dataset

    n_pairs = np.arange(0, 60)
    counts = _holdout_counts(n_pairs, ratios)
    train_ratio = 1 - sum(ratios)
    for n in n_pairs:
        if n == 0:
            assert counts["valid"][n] == counts["test"][n] == 0
            continue
        # RecBole's own cut of n interactions into [train, valid, test] (split_by_ratio, group_by user).
        ids = Dataset._calcu_split_ids(None, tot=int(n), ratios=[train_ratio, *ratios])
        expected = np.diff([0, *ids, n])
        assert (n - counts["valid"][n] - counts["test"][n], counts["valid"][n], counts["test"][n]) == tuple(expected)


def test_holdout_takes_distinct_warm_pairs_per_user_and_repeats_stay_together():
    role = torch.tensor([ROLE_PAD, ROLE_WARM, ROLE_WARM, ROLE_WARM, ROLE_VALID, ROLE_TEST] + [ROLE_WARM] * 10)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 31), 12)
    items = rng.integers(1, 16, size=len(users))  # repeated (user, item) interactions on purpose
    holdout = warm_holdout_pairs(users, items, role, 16, [0.2, 0.2], np.random.default_rng(1))
    valid, test = holdout["valid"], holdout["test"]
    assert np.intersect1d(valid, test).size == 0
    for keys in (valid, test):
        assert (role[torch.from_numpy(keys % 16)] == ROLE_WARM).all()
        assert np.isin(keys, users * 16 + items).all()
    distinct = np.unique(users[role.numpy()[items] == ROLE_WARM] * 16 + items[role.numpy()[items] == ROLE_WARM])
    per_user = np.bincount(distinct // 16, minlength=31)
    counts = _holdout_counts(per_user, [0.2, 0.2])
    assert (np.bincount(valid // 16, minlength=31) == counts["valid"]).all()
    assert (np.bincount(test // 16, minlength=31) == counts["test"]).all()


def test_holdout_is_seeded():
    role = torch.tensor([ROLE_PAD] + [ROLE_WARM] * 20)
    users, items = np.repeat(np.arange(1, 11), 10), np.tile(np.arange(1, 11), 10)
    draw = [warm_holdout_pairs(users, items, role, 21, [0.1, 0.1], np.random.default_rng(seed))["test"]
            for seed in (3, 3, 4)]
    assert np.array_equal(draw[0], draw[1]) and not np.array_equal(draw[0], draw[2])


def test_too_few_warm_interactions_for_a_holdout_is_a_clear_error():
    role = torch.tensor([ROLE_PAD, ROLE_WARM, ROLE_WARM])
    with pytest.raises(DataError, match=r"warm_holdout_ratio.*valid"):
        warm_holdout_pairs(np.array([1, 1, 2, 2]), np.array([1, 2, 1, 2]), role, 3, [0.1, 0.1],
                           np.random.default_rng(0))


# ----- the dataset -----

def test_the_new_item_split_and_masks_do_not_move_with_the_scopes(toy):
    plain = NewItemDataset(toy_config(toy, missing_setting="MTMT"))
    scoped = NewItemDataset(toy_config(toy, missing_setting="MTMT", eval_scopes=SCOPES))
    assert torch.equal(plain.item_role, scoped.item_role)
    assert torch.equal(plain.simulated_missing, scoped.simulated_missing)
    assert plain.warm_holdout is None and scoped.warm_holdout is not None


def test_warm_test_interactions_never_enter_training(toy):
    dataset = NewItemDataset(toy_config(toy, eval_scopes=SCOPES))
    train, scopes = dataset.build_scopes()
    trained = pairs(train)
    for scope in ("warm", "all"):
        for part in scopes[scope]:
            assert not trained & pairs(part)
    assert (dataset.item_role[train.inter_feat["item_id"]] == ROLE_WARM).all()
    for phase, role in ((0, ROLE_VALID), (1, ROLE_TEST)):
        warm_part, new_part, all_part = scopes["warm"][phase], scopes["new"][phase], scopes["all"][phase]
        assert (dataset.item_role[warm_part.inter_feat["item_id"]] == ROLE_WARM).all()
        assert (dataset.item_role[new_part.inter_feat["item_id"]] == role).all()
        assert pairs(all_part) == pairs(warm_part) | pairs(new_part)
        assert len(all_part) == len(warm_part) + len(new_part)
    every = sum(len(part) for part in (train, *scopes["new"], *scopes["warm"]))
    assert every == len(dataset) and not pairs(scopes["warm"][0]) & pairs(scopes["warm"][1])


def test_default_scopes_hold_nothing_out(toy):
    dataset = NewItemDataset(toy_config(toy))
    train, scopes = dataset.build_scopes()
    assert set(scopes) == {"new"}
    assert len(train) == int((dataset.item_role[dataset.inter_feat["item_id"]] == ROLE_WARM).sum())


# ----- candidates and loaders -----

def test_scope_pools_follow_the_item_roles():
    role = torch.tensor([ROLE_PAD, ROLE_WARM, ROLE_VALID, ROLE_TEST, ROLE_WARM, ROLE_TEST])
    assert scope_item_pool(role, "test", "all_new", "warm").tolist() == [False, True, False, False, True, False]
    assert scope_item_pool(role, "test", "all_new", "all").tolist() == [False, True, True, True, True, True]
    assert scope_item_pool(role, "valid", "split_new", "all").tolist() == [False, True, True, False, True, False]
    assert scope_item_pool(role, "valid", "split_new", "new").tolist() == [False, False, True, False, False, False]
    assert scope_item_pool(torch.tensor([ROLE_PAD, ROLE_WARM]), "test", "all_new", "all") is None


def test_scope_loaders_rank_their_candidates_and_hide_earlier_phases(toy):
    config, dataset, (train_data, loaders) = prepared(toy, eval_scopes=["warm", "all"])
    assert set(loaders) == {"new", "warm", "all"}  # new too: score calibration fits on its validation items
    warm = dataset.item_role == ROLE_WARM
    new = (dataset.item_role == ROLE_VALID) | (dataset.item_role == ROLE_TEST)
    trained = pairs(train_data._dataset)
    for scope, (valid_data, test_data) in loaders.items():
        assert valid_data.scope == test_data.scope == scope
    assert torch.equal(loaders["warm"][1].candidate_items, warm)
    assert torch.equal(loaders["all"][1].candidate_items, warm | new)
    valid_pairs = pairs(loaders["all"][0]._dataset)
    test_loader = loaders["all"][1]
    for user in test_loader.uid_list.tolist():
        history = {(user, item) for item in test_loader.uid2history_item[user].tolist()}
        positives = {(user, item) for item in test_loader.uid2positive_item[user].tolist()}
        mine = {pair for pair in trained | valid_pairs if pair[0] == user}
        assert history == mine and not history & positives


def test_training_never_uses_held_out_pairs_and_draws_warm_negatives_only(toy):
    config, dataset, (train_data, loaders) = prepared(toy, eval_scopes=SCOPES, train_batch_size=64)
    held = pairs(loaders["warm"][0]._dataset) | pairs(loaders["warm"][1]._dataset)
    used = train_data._sampler.used_ids
    assert not {(user, item) for user in range(dataset.user_num) for item in used[user]} & held
    warm = dataset.item_role == ROLE_WARM
    negatives = []
    for _ in range(5):
        for batch in train_data:
            assert not {(u, i) for u, i in zip(batch["user_id"].tolist(), batch["item_id"].tolist())} & held
            assert warm[batch["neg_item_id"]].all()
            negatives.extend(batch["neg_item_id"].tolist())
    # Held-out warm items are fair negatives: training never saw them as positives.
    assert {i for _, i in held} & set(negatives)


def test_training_popularity_counts_training_interactions_only(toy):
    config, dataset, (train_data, _) = prepared(
        toy, eval_scopes=SCOPES, train_neg_sample_args={"distribution": "popularity", "sample_num": 1})
    sampler = train_data._sampler
    counts = np.bincount(train_data._dataset.inter_feat["item_id"].numpy(), minlength=dataset.item_num)
    weights = counts[sampler._pool].astype(np.float64)
    assert np.allclose(sampler._cdf, np.cumsum(weights / weights.sum()))


# ----- options and the cache -----

@pytest.mark.parametrize("option, value, message", [
    ("eval_scopes", [], "eval_scopes"), ("eval_scopes", ["new", "cold"], "eval_scopes.*new, warm, all"),
    ("eval_scopes", ["warm", "warm"], "eval_scopes"), ("eval_scopes", "warm", "eval_scopes"),
    ("warm_holdout_ratio", [0.1], "warm_holdout_ratio"), ("warm_holdout_ratio", [0.6, 0.5], "warm_holdout_ratio"),
    ("warm_holdout_ratio", [0.0, 0.1], "warm_holdout_ratio"),
])
def test_bad_scope_options_are_rejected_at_config_time(toy, option, value, message):
    with pytest.raises(ConfigError, match=message):
        toy_config(toy, **{option: value})


def test_warm_scopes_need_the_new_item_split_and_full_ranking(toy):
    with pytest.raises(ConfigError, match=r"eval_scopes.*COLD"):
        toy_config(toy, eval_scopes=["new", "warm"],
                   eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"})
    with pytest.raises(ConfigError, match=r"eval_scopes.*full"):
        toy_config(toy, eval_scopes=["all"], eval_args={"split": {"COLD": None}, "order": "RO", "group_by": "user",
                                                        "mode": "uni100"})


def test_cache_key_follows_the_holdout(toy, built_count):
    create_dataset(toy_config(toy, save_dataset=True))
    create_dataset(toy_config(toy, save_dataset=True, warm_holdout_ratio=[0.2, 0.2]))  # no scope holds out
    assert len(built_count) == 1
    create_dataset(toy_config(toy, save_dataset=True, eval_scopes=SCOPES))
    create_dataset(toy_config(toy, save_dataset=True, eval_scopes=["warm"]))  # the same holdout
    assert len(built_count) == 2
    again = create_dataset(toy_config(toy, save_dataset=True, eval_scopes=SCOPES, warm_holdout_ratio=[0.2, 0.2]))
    assert len(built_count) == 3 and again.warm_holdout["test"].size > 0
