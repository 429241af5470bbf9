"""MTPR: normal and counterfactual item representations, four pairwise ranking tasks (Du et al. 2020)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    batch,
    check_option_is_rejected,
    make_model,
)

from recbole_milk.model.general_recommender.mtpr import MTPR


def test_new_items_use_the_counterfactual_representation_and_warm_items_the_normal_one():
    model = make_model(MTPR, embedding_size=3, content_embedding_size=4)
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        encoded = model.content_encoder(model.item_content().concatenated())
    assert torch.equal(items[NEW, :3], torch.zeros(len(NEW), 3))
    assert torch.allclose(items[WARM, :3], model.item_id_embedding.weight[WARM].detach())
    assert torch.allclose(items[:, 3:], encoded)


def test_loss_sums_the_four_pairwise_tasks():
    model = make_model(MTPR, reg_weight=0.0)
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u = model.user_embedding(users)
    d = model.embedding_size

    def scores(items):
        ids, content = model.item_id_embedding(items), model.content_encoder(model.item_content(items).concatenated())
        return (u[:, :d] * ids).sum(1) + (u[:, d:] * content).sum(1), (u[:, d:] * content).sum(1)

    pos_n, pos_c = scores(pos)
    neg_n, neg_c = scores(neg)
    expected = sum(F.softplus(b - a).mean() for a, b in ((pos_n, neg_n), (pos_c, neg_c), (pos_n, neg_c), (pos_c, neg_n)))
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected)


@pytest.mark.parametrize("key, value", [("content_hidden_sizes", "256"), ("activation", None)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(MTPR, key, value)


