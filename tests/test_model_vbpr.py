"""VBPR: ID factors plus a linear content projection; new items through content alone (He and McAuley 2016)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    all_scores,
    batch,
    check_option_is_rejected,
    make_model,
)

from recbole_milk.model.general_recommender.vbpr import VBPR


def trained_model(**overrides):
    model = make_model(VBPR, **overrides)
    with torch.no_grad():  # non-zero biases, as after training
        model.item_bias.weight.normal_()
        model.content_bias.weight.normal_()
    return model


def test_scores_follow_the_vbpr_formula_with_id_terms_for_warm_items_only():
    model = trained_model()
    users = torch.arange(1, 7)
    x = model.item_content().concatenated()
    content_terms = model.user_content_embedding(users) @ model.content_projection(x).t() + model.content_bias(x).t()
    id_terms = model.user_id_embedding(users) @ model.item_id_embedding.weight.t() + model.item_bias.weight.t()
    scores = all_scores(model)
    assert torch.allclose(scores[:, WARM], (content_terms + id_terms)[:, WARM].detach(), atol=1e-5)
    assert torch.allclose(scores[:, NEW], content_terms[:, NEW].detach(), atol=1e-5)


def test_content_projection_is_linear_without_bias():
    model = make_model(VBPR)
    assert model.content_projection.bias is None and model.content_bias.bias is None


def test_loss_is_bpr_plus_factor_regulariser():
    model = trained_model(reg_weight=0.5)
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)

    def score(items):
        return ((model.user_id_embedding(users) * model.item_id_embedding(items)).sum(1) + model.item_bias(items)[:, 0]
                + (model.user_content_embedding(users) * model.content_projection(model.item_content(items).concatenated())).sum(1)
                + model.content_bias(model.item_content(items).concatenated())[:, 0])

    reg = (model.user_id_embedding(users).pow(2).sum(1) + model.user_content_embedding(users).pow(2).sum(1)
           + model.item_id_embedding(pos).pow(2).sum(1) + model.item_id_embedding(neg).pow(2).sum(1)
           + model.item_bias(pos).pow(2).sum(1) + model.item_bias(neg).pow(2).sum(1)).mean()
    expected = F.softplus(score(neg) - score(pos)).mean() + 0.5 * reg
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected)


@pytest.mark.parametrize("key, value", [("content_embedding_size", 0), ("embedding_size", 1.5),
                                        ("normalize_features", "yes")])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(VBPR, key, value)


