"""GAR: a content generator trained adversarially against a recommender on frozen CF embeddings (Chen et al. 2022)."""
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

from recbole_milk.model.general_recommender.gar import GAR


def model_with(**overrides):
    return make_small_model(GAR, **overrides)


def test_new_items_use_the_generated_embedding_and_warm_items_their_cf_row():
    model = model_with()
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        generated = model.item_tower(model.generator(model.item_content().concatenated()))
        real = model.item_tower(model.item_cf)
    assert torch.allclose(items[NEW], generated[NEW])
    assert torch.allclose(items[WARM], real[WARM])


def players(model):
    recommender = list(model.user_tower.parameters()) + list(model.item_tower.parameters())
    return recommender, list(model.generator.parameters())


def hand_losses(model, w: float, s: float):
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u = model.user_tower(model.user_cf[users])
    score = lambda e: (u * model.item_tower(e)).sum(1)  # noqa: E731
    generated = model.generator(model.item_content(pos).concatenated())
    real, negative = model.item_cf[pos], model.item_cf[neg]
    recommender = F.softplus(-(score(real) - (1 - w) * score(negative) - w * score(generated.detach()))).mean()
    generator = (1 - s) * F.softplus(-(score(generated) - score(real))).mean()
    generator = generator + s * (generated - real).abs().sum(1).mean()
    return recommender, generator


def gradients(model, loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_each_player_is_trained_by_its_own_loss_only():
    model = model_with(generated_negative_weight=0.3, similarity_weight=0.2)
    recommender, generator = players(model)
    total = model.calculate_loss(batch(*TRAIN_BATCH))
    rec_loss, gen_loss = hand_losses(model, 0.3, 0.2)
    assert torch.allclose(total, rec_loss + gen_loss, atol=1e-5)
    for got, want in zip(gradients(model, total, recommender), gradients(model, rec_loss, recommender)):
        assert torch.allclose(got, want, atol=1e-6)
    total = model.calculate_loss(batch(*TRAIN_BATCH))
    for got, want in zip(gradients(model, total, generator), gradients(model, gen_loss, generator)):
        assert torch.allclose(got, want, atol=1e-6)


def margin(model) -> float:
    """Mean recommender score gap between users' real positives and their generated embeddings."""
    users, pos, _ = (torch.tensor(x) for x in TRAIN_BATCH)
    with torch.no_grad():
        u = model.user_tower(model.user_cf[users])
        real = (u * model.item_tower(model.item_cf[pos])).sum(1)
        fake = (u * model.item_tower(model.generator(model.item_content(pos).concatenated()))).sum(1)
    return (real - fake).mean().item()


@pytest.mark.parametrize("player, direction", [(0, 1.0), (1, -1.0)])
def test_the_recommender_widens_and_the_generator_closes_the_real_generated_gap(player, direction):
    model = model_with(generated_negative_weight=1.0, similarity_weight=0.0)
    optimizer = torch.optim.SGD(players(model)[player], lr=0.05)
    before = margin(model)
    for _ in range(20):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert direction * (margin(model) - before) > 0


@pytest.mark.parametrize("key, value", [("generated_negative_weight", 1.5), ("similarity_weight", -0.1),
                                        ("generator_hidden_sizes", [0])])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(GAR, key, value)


