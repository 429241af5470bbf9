"""Shared pieces of the content baselines: option reading, feature preparation, MLPs, the all-item cache."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from baseline_helpers import N_ITEMS, all_scores, make_config, make_dataset, make_model
from recbole.data.interaction import Interaction

from recbole_milk.model.abstract_recommender import ItemRepresentationCache
from recbole_milk.model.content_inputs import (
    prepare_modalities,
    read_modalities,
    read_options,
)
from recbole_milk.model.general_recommender.duif import DUIF
from recbole_milk.model.layers import mlp
from recbole_milk.options import ConfigError


def test_prepare_imputes_missing_rows_then_l2_normalises():
    rows = torch.tensor([[3.0, 4.0], [float("nan"), 0.0], [0.0, 0.0]])
    available = torch.tensor([[True], [False], [True]])
    fill = torch.tensor([0.0, 2.0])
    (prepared,) = prepare_modalities([rows], available, [fill], normalize=True)
    assert torch.allclose(prepared, torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]]))  # zero row stays zero
    (raw,) = prepare_modalities([rows], available, [fill], normalize=False)
    assert torch.allclose(raw, torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]))


def test_huge_finite_rows_are_normalised_not_zeroed():
    rows = torch.tensor([[3e30, 4e30]])
    (prepared,) = prepare_modalities([rows], torch.tensor([[True]]), [torch.zeros(2)], normalize=True)
    assert torch.allclose(prepared, torch.tensor([[0.6, 0.8]]))


def test_model_content_is_normalised_per_modality_then_concatenated():
    dataset = make_dataset()
    model = make_model(DUIF, dataset)
    widths = [x.shape[1] for x in dataset.item_features]
    for part in torch.split(model.item_content().concatenated()[1:], widths, dim=1):
        assert torch.allclose(part.norm(dim=1), torch.ones(N_ITEMS - 1), atol=1e-5)
    raw = make_model(DUIF, dataset, normalize_features=False)
    assert torch.equal(raw.item_content().concatenated()[1:], torch.cat(dataset.item_features, dim=1)[1:])


def test_mlp_puts_activations_between_layers_only():
    net = mlp(5, [8, 4], 3, "relu")
    kinds = [type(layer) for layer in net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [type(layer) for layer in mlp(5, [], 3, "tanh")] == [nn.Linear]


def test_item_table_is_computed_once_per_evaluation_and_refreshed_after_changes():
    model = make_model(DUIF)
    calls = []
    original = model.represent_items
    model.represent_items = lambda content, items=None: calls.append(1) or original(content, items)
    model.eval()
    first = all_scores(model)
    all_scores(model)
    assert len(calls) == 1
    with torch.no_grad():
        model.user_embedding.weight.add_(0.0)  # an in-place update, as an optimizer step makes
        model.content_encoder[0].weight.mul_(2.0)
    changed = all_scores(model)
    assert len(calls) == 2 and not torch.allclose(first, changed)
    model.train()
    model.eval()
    all_scores(model)
    assert len(calls) == 3


def test_cache_does_not_hold_values_in_training_mode():
    cache = ItemRepresentationCache()
    module = nn.Linear(2, 2)
    module.train()
    values = [cache.get(module, lambda: torch.randn(1)) for _ in range(2)]
    assert not torch.equal(values[0], values[1])


def test_missing_option_names_the_key_and_the_model_yaml():
    config = make_config(DUIF)
    del config["content_hidden_sizes"]
    with pytest.raises(ConfigError, match="content_hidden_sizes.*DUIF.yaml"):
        read_options(DUIF, config)


def test_inconsistent_modality_data_is_a_clear_error():
    dataset = make_dataset()
    dataset.item_features[1] = dataset.item_features[1][:-1]
    with pytest.raises(ValueError, match="modality 'mod1'.*rows by internal item id"):
        read_modalities(dataset, N_ITEMS, "DUIF")
    empty = SimpleNamespace(item_features=[], modality_names=[], item_availability=torch.zeros(N_ITEMS, 0),
                            imputation_values=[])
    with pytest.raises(ValueError, match="at least 1 modalities"):
        read_modalities(empty, N_ITEMS, "DUIF")


def test_item_role_of_the_wrong_length_is_a_clear_error():
    dataset = make_dataset()
    dataset.item_role = dataset.item_role[:-1]
    with pytest.raises(ValueError, match="item_role"):
        make_model(DUIF, dataset)


def test_candidate_scores_follow_the_candidates_they_are_given():
    model = make_model(DUIF)
    model.eval()
    users = Interaction({model.USER_ID: torch.tensor([1, 2])})
    full = model.full_sort_predict(users).view(2, -1)
    for candidates in (torch.tensor([1, 3, 4]), torch.tensor([2, 5, 6])):  # same length, other items
        assert torch.allclose(model.candidate_scores(users, candidates), full[:, candidates])
