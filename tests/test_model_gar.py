"""GAR: a content generator trained adversarially against a recommender on frozen CF embeddings (Chen et al. 2022)."""
import pytest
import torch
import torch.nn.functional as F

from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    batch,
    check_buffers_stay_out_of_checkpoints,
    check_full_sort_predict_equals_predict,
    check_loss_is_finite_and_training_lowers_it,
    check_new_items_are_scored_from_content_only,
    check_no_new_item_leakage,
    check_yaml_defaults_pass_the_option_checks,
    make_dataset,
    make_model,
    run_end_to_end,
    toy_cf_folder,  # noqa: F401 (module fixture)
    write_pretrained,
)
from recbole_milk.model.gar import GAR
from recbole_milk.options import ConfigError, validate_options


@pytest.fixture
def cf_folder(tmp_path):
    return str(write_pretrained(tmp_path / "cf", make_dataset()))


def model_with(cf_folder, **overrides):
    # Small players keep the module fast; the checks do not depend on the layer sizes.
    sizes = {"hidden_sizes": [32], "generator_hidden_sizes": [16]}
    return make_model(GAR, pretrained_cf_dir=cf_folder, **{**sizes, **overrides})


def test_forward_and_loss_on_a_toy_batch(cf_folder):
    check_loss_is_finite_and_training_lowers_it(model_with(cf_folder))


def test_new_items_are_scored_from_content_only(cf_folder):
    check_new_items_are_scored_from_content_only(model_with(cf_folder))


def test_no_new_item_leakage(cf_folder):
    check_no_new_item_leakage(model_with(cf_folder))


def test_full_sort_predict_equals_predict(cf_folder):
    check_full_sort_predict_equals_predict(model_with(cf_folder))


def test_feature_and_cf_buffers_stay_out_of_checkpoints(cf_folder):
    check_buffers_stay_out_of_checkpoints(model_with(cf_folder))


def test_yaml_defaults_pass_the_option_checks(cf_folder):
    check_yaml_defaults_pass_the_option_checks(GAR, pretrained_cf_dir=cf_folder)


def test_new_items_use_the_generated_embedding_and_warm_items_their_cf_row(cf_folder):
    model = model_with(cf_folder)
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        generated = model.item_tower(model.generator(model.item_content))
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
    generated = model.generator(model.item_content[pos])
    real, negative = model.item_cf[pos], model.item_cf[neg]
    recommender = F.softplus(-(score(real) - (1 - w) * score(negative) - w * score(generated.detach()))).mean()
    generator = (1 - s) * F.softplus(-(score(generated) - score(real))).mean()
    generator = generator + s * (generated - real).abs().sum(1).mean()
    return recommender, generator


def gradients(model, loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_each_player_is_trained_by_its_own_loss_only(cf_folder):
    model = model_with(cf_folder, generated_negative_weight=0.3, similarity_weight=0.2)
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
        fake = (u * model.item_tower(model.generator(model.item_content[pos]))).sum(1)
    return (real - fake).mean().item()


@pytest.mark.parametrize("player, direction", [(0, 1.0), (1, -1.0)])
def test_the_recommender_widens_and_the_generator_closes_the_real_generated_gap(cf_folder, player, direction):
    model = model_with(cf_folder, generated_negative_weight=1.0, similarity_weight=0.0)
    optimizer = torch.optim.SGD(players(model)[player], lr=0.05)
    before = margin(model)
    for _ in range(20):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert direction * (margin(model) - before) > 0


def test_pretrained_embeddings_are_frozen_by_training(cf_folder):
    model = model_with(cf_folder)
    user_cf, item_cf = model.user_cf.clone(), model.item_cf.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert torch.equal(model.user_cf, user_cf) and torch.equal(model.item_cf, item_cf)


@pytest.mark.parametrize("key, value", [("generated_negative_weight", 1.5), ("similarity_weight", -0.1),
                                        ("generator_hidden_sizes", [0])])
def test_invalid_options_are_rejected_with_the_key_named(cf_folder, key, value):
    with pytest.raises(ConfigError, match=key):
        model_with(cf_folder, **{key: value})


def test_missing_pretrained_folder_is_rejected_with_the_export_command():
    with pytest.raises(ConfigError, match="pretrained_cf_dir.*export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": None}, GAR)


def test_runs_end_to_end_on_exported_embeddings(tmp_path, toy_cf_folder):  # noqa: F811
    result = run_end_to_end("GAR", tmp_path, pretrained_cf_dir=str(toy_cf_folder), hidden_sizes=[32],
                            generator_hidden_sizes=[16])
    assert result["model"] == "GAR" and result["epochs_trained"] == 2
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
