"""DUIF: content-only user-item model (Geng et al. 2015)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    all_scores,
    batch,
    check_option_is_rejected,
    make_dataset,
    make_model,
)

from recbole_milk.model.general_recommender.duif import DUIF


def test_score_is_user_embedding_dot_mlp_of_concatenated_normalised_modalities():
    dataset = make_dataset()
    model = make_model(DUIF, dataset)
    content = torch.cat([F.normalize(x, dim=1) for x in dataset.item_features], dim=1)
    expected = model.user_embedding.weight[1:] @ model.content_encoder(content).t()
    assert torch.allclose(all_scores(model)[:, 1:], expected.detach()[:, 1:], atol=1e-5)
    assert len([m for m in model.content_encoder if isinstance(m, torch.nn.Linear)]) == 2  # default: 2-layer MLP


def test_items_with_identical_content_get_identical_scores():
    model = make_model(DUIF)
    with torch.no_grad():
        for table in model._tables("item_feature"):
            table[NEW[0]] = table[2]
    scores = all_scores(model)
    assert torch.allclose(scores[:, NEW[0]], scores[:, 2])


def test_loss_is_bpr_plus_embedding_regulariser():
    model = make_model(DUIF, reg_weight=0.5)
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u = model.user_embedding(users)
    p, n = model.content_encoder(model.item_content(pos).concatenated()), model.content_encoder(model.item_content(neg).concatenated())
    expected = F.softplus((u * n).sum(1) - (u * p).sum(1)).mean() + 0.5 * (
        u.pow(2).sum(1) + p.pow(2).sum(1) + n.pow(2).sum(1)).mean()
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected)


@pytest.mark.parametrize("key, value", [("content_hidden_sizes", [0]), ("activation", "gelu"),
                                        ("embedding_size", 0), ("reg_weight", -1.0)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(DUIF, key, value)


