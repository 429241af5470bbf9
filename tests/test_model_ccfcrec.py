"""CCFCRec: content CF and co-occurrence CF modules tied by contrastive learning (Zhou et al. 2023)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    DIMS,
    NEW,
    TRAIN_BATCH,
    WARM,
    batch,
    check_option_is_rejected,
    make_small_model,
)

from recbole_milk.model.general_recommender.ccfcrec import CCFCRec


def small_model(**overrides):
    return make_small_model(CCFCRec, **overrides)


def test_warm_items_use_their_cooccurrence_embedding_and_new_items_the_content_module():
    model = small_model()
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        encoded = model.content_encoder(model.item_content().concatenated())
    assert torch.allclose(items[WARM], model.item_embedding.weight[WARM])
    assert torch.allclose(items[NEW], encoded[NEW])


def test_content_module_pools_one_embedding_per_modality_with_attention():
    model = small_model()
    encoder = model.content_encoder
    content = model.item_content().concatenated()[1:5]
    with torch.no_grad():
        parts = torch.split(content, list(DIMS), dim=1)
        embedded = torch.stack([encoder.projections[m](parts[m]) for m in range(len(DIMS))], dim=1)
        weights = encoder.attention_weights(embedded)
        expected = encoder.output((weights.unsqueeze(2) * embedded).sum(dim=1))
        assert torch.allclose(weights.sum(dim=1), torch.ones(4))
        assert torch.allclose(encoder(content), expected, atol=1e-6)
        # Changing one modality's rows moves the representation (both modalities are used).
        for m, start in ((0, 0), (1, DIMS[0])):
            moved = content.clone()
            moved[:, start] += 1.0
            assert not torch.allclose(encoder(moved), encoder(content))


def hand_contrast(model, count: int) -> torch.Tensor:
    """L_C from its definition: per row, the positive's co-occurrence embedding among the first `count` negatives'."""
    _, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    rows = []
    for r in range(len(pos)):
        q = F.normalize(model.content_encoder(model.item_content(pos[r : r + 1]).concatenated()), dim=1)[0]
        candidates = [pos[r]] + [j for j in neg[:count] if j != pos[r]]
        v = F.normalize(model.item_embedding(torch.stack(candidates)), dim=1)
        rows.append(-torch.log_softmax(v @ q / model.temperature, dim=0)[0])
    return torch.stack(rows).mean()


def test_loss_is_two_bpr_losses_plus_weighted_contrast_plus_regulariser():
    model = small_model(contrast_weight=0.7, reg_weight=0.3, temperature=0.2, num_negatives=4)
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u = model.user_embedding(users)
    q = lambda items: model.content_encoder(model.item_content(items).concatenated())  # noqa: E731
    v = model.item_embedding

    def bpr(represent):
        return F.softplus((u * represent(neg)).sum(1) - (u * represent(pos)).sum(1)).mean()

    reg = (u.pow(2).sum(1) + v(pos).pow(2).sum(1) + v(neg).pow(2).sum(1)).mean()
    expected = bpr(q) + bpr(v) + 0.7 * hand_contrast(model, 4) + 0.3 * reg
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected, atol=1e-5)


def test_contrast_trains_the_content_module_towards_the_cooccurrence_embeddings():
    model = small_model(contrast_weight=1.0)
    before = hand_contrast(model, 7).item()
    optimizer = torch.optim.Adam(model.content_encoder.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert hand_contrast(model, 7).item() < before


@pytest.mark.parametrize("key, value", [("temperature", 0.0), ("contrast_weight", -1.0), ("num_negatives", 0)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(CCFCRec, key, value)


