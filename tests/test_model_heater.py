"""Heater: mixture-of-experts content-to-CF alignment with randomized training (Zhu et al. 2020)."""
import pytest
import torch
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    batch,
    check_option_is_rejected,
    make_small_model,
)

from recbole_milk.model.general_recommender.heater import Heater
from recbole_milk.model.layers import MixtureOfExperts


def model_with(**overrides):
    return make_small_model(Heater, **overrides)


def test_experts_are_distinct_and_gates_are_a_softmax():
    torch.manual_seed(0)
    moe = MixtureOfExperts(6, 4, num_experts=5)
    x = torch.randn(3, 6)
    outputs = moe.expert_outputs(x)
    assert outputs.shape == (3, 5, 4)
    for a in range(5):
        for b in range(a + 1, 5):
            assert not torch.allclose(outputs[:, a], outputs[:, b])
    weights = torch.softmax(moe.gate(x), dim=1)
    assert torch.allclose(moe(x), (weights.unsqueeze(2) * outputs).sum(1))
    moe(x).sum().backward()
    grads = moe.experts.weight.grad.view(5, 4, 6)
    assert all(grads[k].abs().sum() > 0 for k in range(5))  # every expert learns, each with its own weights


def test_new_items_use_the_content_transform_and_warm_items_their_cf_row():
    model = model_with()
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        from_content = model.item_transform(model.content_experts(model.item_content().concatenated()))
        from_cf = model.item_transform(model.item_cf)
    assert torch.allclose(items[NEW], from_content[NEW])
    assert torch.allclose(items[WARM], from_cf[WARM])


def hand_loss(model, replaced: bool, align_weight: float) -> torch.Tensor:
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u_cf = model.user_cf[users]
    user_r = model.user_transform(u_cf)
    errors = []
    for items in (pos, neg):
        source = model.content_experts(model.item_content(items).concatenated()) if replaced else model.item_cf[items]
        errors.append((user_r * model.item_transform(source)).sum(1) - (u_cf * model.item_cf[items]).sum(1))
    distinct = torch.unique(torch.cat([pos, neg]))
    align = (model.content_experts(model.item_content(distinct).concatenated()) - model.item_cf[distinct]).pow(2).sum(1).mean()
    return torch.cat(errors).pow(2).mean() + align_weight * align


def test_loss_is_score_regression_plus_similarity_constraint():
    model = model_with(random_replace_rate=0.0, align_weight=0.7, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), hand_loss(model, False, 0.7), atol=1e-5)


def test_randomized_training_replaces_cf_rows_by_the_content_transform():
    model = model_with(random_replace_rate=0.999999, align_weight=0.0, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), hand_loss(model, True, 0.0), atol=1e-5)


@pytest.mark.parametrize("key, value", [("num_experts", 0), ("random_replace_rate", 1.0), ("align_weight", -0.1)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(Heater, key, value)


