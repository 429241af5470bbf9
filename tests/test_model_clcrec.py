"""CLCRec: user-item and ID-content contrastive learning (Wei et al. 2021)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    batch,
    check_option_is_rejected,
    make_small_model,
)

from recbole_milk.model.general_recommender.clcrec import CLCRec, replace_by_content
from recbole_milk.model.loss import contrastive_loss


def small_model(**overrides):
    return make_small_model(CLCRec, **overrides)


def test_warm_items_use_their_id_embedding_and_new_items_their_content_encoding():
    model = small_model()
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        encoded = model.content_encoder(model.item_content().concatenated())
    assert torch.allclose(items[WARM], model.item_id_embedding.weight[WARM])
    assert torch.allclose(items[NEW], encoded[NEW])


def test_contrastive_loss_is_infonce_without_the_rows_own_item_among_negatives():
    torch.manual_seed(0)
    anchors, positives, negatives = torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4)
    same = torch.tensor([[False, False], [True, False], [False, False]])
    loss = contrastive_loss(anchors, positives, negatives, same, temperature=0.5)
    expected = []
    for row in range(3):
        logits = [anchors[row] @ positives[row]] + [anchors[row] @ negatives[k] for k in range(2) if not same[row, k]]
        expected.append(-torch.log_softmax(torch.stack(logits) / 0.5, dim=0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean())


def hand_loss(model, replaced: bool, weight: float, reg_weight: float) -> torch.Tensor:
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    same = neg.unsqueeze(0) == pos.unsqueeze(1)
    u = model.user_embedding(users)
    encode = lambda items: model.content_encoder(model.item_content(items).concatenated())  # noqa: E731
    represent = encode if replaced else model.item_id_embedding
    user_item = contrastive_loss(u, represent(pos), represent(neg), same, model.temperature)
    id_content = contrastive_loss(F.normalize(model.item_id_embedding(pos), dim=1), F.normalize(encode(pos), dim=1),
                                  F.normalize(encode(neg), dim=1), same, model.temperature)
    distinct = torch.unique(torch.cat([pos, neg]))
    reg = (u.norm(dim=1).mean() + model.item_id_embedding(distinct).norm(dim=1).mean()) / 2
    return weight * id_content + (1 - weight) * user_item + reg_weight * reg


@pytest.mark.parametrize("rate, replaced", [(0.0, False), (1.0, True)])
def test_loss_weighs_the_id_content_and_user_item_contrasts(rate, replaced):
    model = small_model(content_replace_rate=rate, content_contrast_weight=0.3, reg_weight=0.2)
    expected = hand_loss(model, replaced, 0.3, 0.2)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected, atol=1e-5)


def test_replacement_uses_content_for_about_the_configured_share_of_rows():
    torch.manual_seed(0)
    ids, encoded = torch.zeros(4000, 3), torch.ones(4000, 3)
    mixed = replace_by_content(ids, encoded, 0.3)
    assert ((mixed == 0).all(dim=1) | (mixed == 1).all(dim=1)).all()  # whole rows are replaced
    assert 0.27 < mixed[:, 0].mean().item() < 0.33
    assert torch.equal(replace_by_content(ids, encoded, 0.0), ids)
    assert torch.equal(replace_by_content(ids, encoded, 1.0), encoded)


def test_only_the_configured_number_of_negatives_is_used():
    model = small_model(num_negatives=2, content_replace_rate=0.0, reg_weight=0.0)
    users, pos, neg = TRAIN_BATCH
    changed = list(neg[:2]) + [n % 8 + 1 for n in neg[2:]]  # other negatives after the first two
    first = model.calculate_loss(batch(users, pos, neg))
    second = model.calculate_loss(batch(users, pos, changed))
    assert torch.allclose(first, second)


@pytest.mark.parametrize("key, value", [("temperature", 0.0), ("num_negatives", 0),
                                        ("content_replace_rate", 1.5), ("content_contrast_weight", -0.1)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(CLCRec, key, value)


