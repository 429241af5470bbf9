"""WarmItemSampler: negatives come from the phase's pool (warm items in training) and sampling always ends."""
import logging

import numpy as np
import pytest
import torch
from fixtures import toy_config, write_toy_dataset

from recbole_milk.data.dataset import (
    ROLE_PAD,
    ROLE_TEST,
    ROLE_VALID,
    ROLE_WARM,
    NewItemDataset,
)
from recbole_milk.data.sampler import WarmItemSampler, phase_item_pool
from recbole_milk.data.utils import create_samplers, data_preparation


def prepared(config_dict, **overrides):
    config = toy_config(config_dict, **overrides)
    dataset = NewItemDataset(config)
    built = dataset.build()
    return config, dataset, built


def test_phase_pools_follow_the_item_roles():
    role = torch.tensor([ROLE_PAD, ROLE_WARM, ROLE_VALID, ROLE_TEST, ROLE_WARM, ROLE_TEST])
    assert phase_item_pool(role, "train").tolist() == [False, True, False, False, True, False]
    assert phase_item_pool(role, "valid", "all_new").tolist() == [False, False, True, True, False, True]
    assert phase_item_pool(role, "test", "all_new").tolist() == [False, False, True, True, False, True]
    assert phase_item_pool(role, "valid", "split_new").tolist() == [False, False, True, False, False, False]
    assert phase_item_pool(role, "test", "split_new").tolist() == [False, False, False, True, False, True]


def test_without_new_items_every_item_is_in_every_pool():
    role = torch.tensor([ROLE_PAD, ROLE_WARM, ROLE_WARM])
    assert all(phase_item_pool(role, phase) is None for phase in ("train", "valid", "test"))


def test_negatives_never_come_from_new_items(tmp_path):
    config = toy_config(write_toy_dataset(tmp_path / "data"), train_batch_size=64)
    dataset = NewItemDataset(config)
    train_data = data_preparation(config, dataset)[0]
    warm = dataset.item_role == ROLE_WARM
    seen = set()
    for _ in range(20):
        for batch in train_data:
            negatives = batch["neg_item_id"]
            assert warm[negatives].all()
            seen.update(negatives.tolist())
    assert len(seen) > 0.9 * int(warm.sum())  # and they are spread over the warm items


def test_negatives_are_not_positives_of_the_user(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"))
    sampler = create_samplers(config, dataset, built)[0]
    train = built[0].inter_feat
    positives = set(zip(train["user_id"].tolist(), train["item_id"].tolist()))
    users = np.repeat(np.arange(1, dataset.user_num), 50)
    negatives = sampler.sample_by_user_ids(users, None, 3).numpy()
    assert not any((u, i) in positives for u, i in zip(np.tile(users, 3), negatives))


def test_popularity_negatives_stay_warm_and_follow_counts(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"),
                                      train_neg_sample_args={"distribution": "popularity", "sample_num": 1})
    sampler = create_samplers(config, dataset, built)[0]
    negatives = sampler.sampling(20000)
    assert (dataset.item_role[torch.from_numpy(negatives)] == ROLE_WARM).all()
    counts = np.bincount(built[0].inter_feat["item_id"].numpy(), minlength=dataset.item_num)
    drawn = np.bincount(negatives, minlength=dataset.item_num)
    warm = (dataset.item_role == ROLE_WARM).numpy()
    assert np.corrcoef(counts[warm], drawn[warm])[0, 1] > 0.8


def test_sampled_evaluation_draws_from_the_candidate_pool(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"), candidate_pool="split_new")
    _, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    assert (dataset.item_role[torch.from_numpy(valid_sampler.sampling(500))] == ROLE_VALID).all()
    assert (dataset.item_role[torch.from_numpy(test_sampler.sampling(500))] == ROLE_TEST).all()


def test_a_user_who_used_every_warm_item_does_not_hang_the_sampler(tmp_path, caplog):
    config_dict = write_toy_dataset(tmp_path / "data", n_users=10, n_items=20, inter_per_user=3)
    inter = tmp_path / "data" / "toy" / "toy.inter"
    with open(inter, "a") as handle:
        handle.write("".join(f"0\t{item}\t1\t1\n" for item in range(20)))
    config, dataset, built = prepared(config_dict)
    sampler = create_samplers(config, dataset, built)[0]
    user = dataset.token2id("user_id", "0")
    with caplog.at_level(logging.WARNING):
        negatives = sampler.sample_by_user_ids(np.array([user] * 200 + [user + 1] * 5), None, 2)
        sampler.sample_by_user_ids(np.array([user] * 10), None, 1)
    assert (dataset.item_role[negatives] == ROLE_WARM).all()
    assert sum("every item of the train pool" in r.message for r in caplog.records) == 1


def test_a_user_who_used_almost_every_warm_item_gets_the_unused_ones(tmp_path):
    config_dict = write_toy_dataset(tmp_path / "data", n_users=10, n_items=40, inter_per_user=3)
    config, dataset, _ = prepared(config_dict)
    warm_tokens = dataset.field2id_token["item_id"][(dataset.item_role == ROLE_WARM).numpy()]
    with open(tmp_path / "data" / "toy" / "toy.inter", "a") as handle:
        handle.write("".join(f"0\t{token}\t1\t1\n" for token in warm_tokens[:-1]))
    config, dataset, built = prepared(config_dict)
    sampler = create_samplers(config, dataset, built)[0]
    user = dataset.token2id("user_id", "0")
    negatives = sampler.sample_by_user_ids(np.array([user] * 100), None, 1)
    assert set(negatives.tolist()) == {dataset.token2id("item_id", warm_tokens[-1])}


def test_sampler_layout_matches_recbole(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"))
    sampler = create_samplers(config, dataset, built)[0]
    assert isinstance(sampler, WarmItemSampler) and sampler.phase == "train"
    users = np.array([1, 2, 3])
    negatives = sampler.sample_by_user_ids(users, None, 4)
    assert negatives.shape == (12,) and negatives.dtype == torch.int64
    # RecBole's layout: value[j * len(users) + i] belongs to users[i].
    for j in range(4):
        for i, user in enumerate(users):
            assert negatives[j * 3 + i].item() not in sampler.used_ids[user]


def test_used_ids_accumulate_over_phases_as_recbole_expects(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"))
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    for user in range(1, dataset.user_num):
        assert train_sampler.used_ids[user] <= valid_sampler.used_ids[user] <= test_sampler.used_ids[user]
    total = sum(len(s) for s in test_sampler.used_ids)
    assert total == len(dataset)


def test_sampling_before_set_phase_is_refused(tmp_path):
    config, dataset, built = prepared(write_toy_dataset(tmp_path / "data"))
    base = WarmItemSampler(["train", "valid", "test"], built)
    with pytest.raises(RuntimeError, match="set_phase"):
        base.sample_by_user_ids(np.array([1]), None, 1)


def _epoch_batches(train_data):
    return [(batch["user_id"], batch["item_id"], batch["neg_item_id"]) for batch in train_data]


def test_an_epoch_draws_its_negatives_in_one_sampler_call(tmp_path, monkeypatch):
    config = toy_config(write_toy_dataset(tmp_path / "data"), train_batch_size=16)
    train_data = data_preparation(config, NewItemDataset(config))[0]
    calls = []
    original = train_data._sampler.sample_by_user_ids
    monkeypatch.setattr(train_data._sampler, "sample_by_user_ids",
                        lambda users, items, num: calls.append(len(users)) or original(users, items, num))
    batches = _epoch_batches(train_data)
    assert len(batches) > 3 and calls == [len(train_data.dataset)]  # one call for the whole epoch
    _epoch_batches(train_data)
    assert calls == [len(train_data.dataset)] * 2  # and a fresh draw every epoch


def test_epoch_negatives_pair_each_interaction_with_an_unused_warm_item(tmp_path):
    config = toy_config(write_toy_dataset(tmp_path / "data"), train_batch_size=16)
    dataset = NewItemDataset(config)
    train_data = data_preparation(config, dataset)[0]
    inter = train_data.dataset.inter_feat
    positives = set(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))
    pairs = []
    for users, items, negatives in _epoch_batches(train_data):
        assert (dataset.item_role[negatives] == ROLE_WARM).all()
        assert not any((u, n) in positives for u, n in zip(users.tolist(), negatives.tolist()))
        pairs += list(zip(users.tolist(), items.tolist()))
    assert sorted(pairs) == sorted(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))  # the epoch, once


def test_several_negatives_per_interaction_keep_recbole_s_batch_layout(tmp_path):
    config = toy_config(write_toy_dataset(tmp_path / "data"), train_batch_size=16,
                        train_neg_sample_args={"distribution": "uniform", "sample_num": 3, "alpha": 1.0,
                                               "dynamic": False, "candidate_num": 0})
    train_data = data_preparation(config, NewItemDataset(config))[0]
    for users, items, negatives in _epoch_batches(train_data):
        # RecBole repeats the batch once per negative: row j * n + i is interaction i with its j-th negative.
        n = len(users) // 3
        assert torch.equal(users, users[:n].repeat(3)) and torch.equal(items, items[:n].repeat(3))
        assert len(negatives) == 3 * n
