"""NewItemFullSortEvalDataLoader: full ranking restricted to candidate new items."""
import pytest
import torch
from fixtures import toy_config, write_toy_dataset
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_milk.data.dataloader import NewItemFullSortEvalDataLoader
from recbole_milk.data.dataset import ROLE_TEST, ROLE_VALID, NewItemDataset
from recbole_milk.data.utils import data_preparation


def loaders(tmp_path, **overrides):
    config = toy_config(write_toy_dataset(tmp_path / "data"), **overrides)
    dataset = NewItemDataset(config)
    return dataset, data_preparation(config, dataset)


def top_k_under_mask(loader, k, seed):
    """What the trainer does: random scores, non-candidates at -inf, then top-k per evaluated user."""
    generator = torch.Generator().manual_seed(seed)
    for users, _, _, _ in loader:
        scores = torch.rand((len(users), loader._dataset.item_num), generator=generator)
        scores[:, ~loader.candidate_items] = float("-inf")
        yield scores.topk(k, dim=1).indices


def test_eval_loaders_stay_full_sort_loaders_for_recbole_trainer(tmp_path):
    _, (_, valid_data, test_data) = loaders(tmp_path)
    for loader in (valid_data, test_data):
        assert isinstance(loader, NewItemFullSortEvalDataLoader) and isinstance(loader, FullSortEvalDataLoader)
    assert (valid_data.phase, test_data.phase) == ("valid", "test")


def test_all_new_pool_ranks_valid_and_test_new_items_in_both_phases(tmp_path):
    dataset, (_, valid_data, test_data) = loaders(tmp_path)
    new = (dataset.item_role == ROLE_VALID) | (dataset.item_role == ROLE_TEST)
    assert torch.equal(valid_data.candidate_items, new) and torch.equal(test_data.candidate_items, new)
    for loader in (valid_data, test_data):
        for top in top_k_under_mask(loader, k=10, seed=0):
            assert new[top].all()


def test_split_new_pool_ranks_only_the_phase_new_items(tmp_path):
    dataset, (_, valid_data, test_data) = loaders(tmp_path, candidate_pool="split_new")
    for loader, role in ((valid_data, ROLE_VALID), (test_data, ROLE_TEST)):
        assert torch.equal(loader.candidate_items, dataset.item_role == role)
        for top in top_k_under_mask(loader, k=5, seed=1):
            assert (dataset.item_role[top] == role).all()


def test_evaluated_users_are_those_with_an_interaction_with_the_phase_new_items(tmp_path):
    dataset, (_, valid_data, test_data) = loaders(tmp_path)
    inter = dataset.inter_feat
    for loader, role in ((valid_data, ROLE_VALID), (test_data, ROLE_TEST)):
        in_phase = dataset.item_role[inter["item_id"]] == role
        expected = set(inter["user_id"][in_phase].tolist())
        assert set(loader.uid_list.tolist()) == expected
        for uid in expected:
            assert (dataset.item_role[loader.uid2positive_item[uid]] == role).all()


def test_random_split_ranks_every_item(tmp_path):
    _, (_, valid_data, test_data) = loaders(
        tmp_path, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"})
    assert valid_data.candidate_items is None and test_data.candidate_items is None


def test_unknown_candidate_pool_is_rejected_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="candidate_pool"):
        toy_config(write_toy_dataset(tmp_path / "data"), candidate_pool="everything")
