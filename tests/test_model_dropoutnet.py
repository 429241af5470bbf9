"""DropoutNet: preference-input dropout over frozen pre-trained CF embeddings (Volkovs et al. 2017)."""
import torch
from baseline_helpers import NEW, TRAIN_BATCH, WARM, batch, make_small_model

from recbole_milk.model.general_recommender.dropoutnet import DropoutNet


def model_with(**overrides):
    return make_small_model(DropoutNet, **overrides)


def test_new_items_get_a_zero_preference_input_and_warm_items_their_cf_row():
    model = model_with()
    model.eval()
    content = model.item_content().concatenated()
    zero = torch.zeros(model.n_items, model.item_cf.shape[1])
    with torch.no_grad():
        from_zero = model.item_tower(torch.cat([zero, content], dim=1))
        from_cf = model.item_tower(torch.cat([model.item_cf, content], dim=1))
        items = model.item_representations()
    assert torch.allclose(items[NEW], from_zero[NEW])
    assert torch.allclose(items[WARM], from_cf[WARM])
    assert not torch.allclose(items[WARM], from_zero[WARM])


def regression_loss(model, preference_kept: bool) -> torch.Tensor:
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u_cf = model.user_cf[users]
    user_r = model.user_tower(u_cf)
    losses = []
    for items in (pos, neg):
        preference = model.item_cf[items] if preference_kept else torch.zeros_like(model.item_cf[items])
        item_r = model.item_tower(torch.cat([preference, model.item_content(items).concatenated()], dim=1))
        losses.append((user_r * item_r).sum(1) - (u_cf * model.item_cf[items]).sum(1))
    return torch.cat(losses).pow(2).mean()


def test_loss_regresses_onto_the_pretrained_scores():
    model = model_with(dropout_rate=0.0, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), regression_loss(model, True))


def test_dropout_zeroes_the_preference_input_of_dropped_items():
    model = model_with(dropout_rate=0.999999, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), regression_loss(model, False))


def test_dropout_drops_about_the_configured_share_of_items(monkeypatch):
    model = model_with(dropout_rate=0.3)
    seen = []
    original = model.item_tower.forward
    monkeypatch.setattr(model.item_tower, "forward", lambda x: seen.append(x.detach().clone()) or original(x))
    torch.manual_seed(0)
    for _ in range(200):
        model.calculate_loss(batch(*TRAIN_BATCH))
    inputs = torch.cat(seen)
    dropped = (inputs[:, : model.item_cf.shape[1]] == 0).all(dim=1).float().mean().item()
    assert 0.25 < dropped < 0.35


