"""DropoutNet: preference-input dropout over frozen pre-trained CF embeddings (Volkovs et al. 2017)."""
import pytest
import torch

from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    all_scores,
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
from recbole_milk.model.dropoutnet import DropoutNet
from recbole_milk.options import ConfigError, validate_options


@pytest.fixture
def cf_folder(tmp_path):
    return str(write_pretrained(tmp_path / "cf", make_dataset()))


def model_with(cf_folder, **overrides):
    return make_model(DropoutNet, pretrained_cf_dir=cf_folder, **overrides)


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
    check_yaml_defaults_pass_the_option_checks(DropoutNet, pretrained_cf_dir=cf_folder)


def test_new_items_get_a_zero_preference_input_and_warm_items_their_cf_row(cf_folder):
    model = model_with(cf_folder)
    model.eval()
    content = model.item_content
    zero = torch.zeros(model.n_items, model.item_cf.shape[1])
    with torch.no_grad():
        from_zero = model.item_tower(torch.cat([zero, content], dim=1))
        from_cf = model.item_tower(torch.cat([model.item_cf, content], dim=1))
        items = model.item_representations()
    assert torch.allclose(items[NEW], from_zero[NEW])
    assert torch.allclose(items[WARM], from_cf[WARM])
    assert not torch.allclose(items[WARM], from_zero[WARM])


def test_pretrained_embeddings_are_frozen_by_training(cf_folder):
    model = model_with(cf_folder)
    user_cf, item_cf = model.user_cf.clone(), model.item_cf.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert torch.equal(model.user_cf, user_cf) and torch.equal(model.item_cf, item_cf)


def regression_loss(model, preference_kept: bool) -> torch.Tensor:
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u_cf = model.user_cf[users]
    user_r = model.user_tower(u_cf)
    losses = []
    for items in (pos, neg):
        preference = model.item_cf[items] if preference_kept else torch.zeros_like(model.item_cf[items])
        item_r = model.item_tower(torch.cat([preference, model.item_content[items]], dim=1))
        losses.append((user_r * item_r).sum(1) - (u_cf * model.item_cf[items]).sum(1))
    return torch.cat(losses).pow(2).mean()


def test_loss_regresses_onto_the_pretrained_scores(cf_folder):
    model = model_with(cf_folder, dropout_rate=0.0, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), regression_loss(model, True))


def test_dropout_zeroes_the_preference_input_of_dropped_items(cf_folder):
    model = model_with(cf_folder, dropout_rate=0.999999, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), regression_loss(model, False))


def test_dropout_drops_about_the_configured_share_of_items(cf_folder, monkeypatch):
    model = model_with(cf_folder, dropout_rate=0.3)
    seen = []
    original = model.item_tower.forward
    monkeypatch.setattr(model.item_tower, "forward", lambda x: seen.append(x.detach().clone()) or original(x))
    torch.manual_seed(0)
    for _ in range(200):
        model.calculate_loss(batch(*TRAIN_BATCH))
    inputs = torch.cat(seen)
    dropped = (inputs[:, : model.item_cf.shape[1]] == 0).all(dim=1).float().mean().item()
    assert 0.25 < dropped < 0.35


def test_missing_pretrained_folder_is_rejected_before_any_work_with_the_export_command(tmp_path):
    with pytest.raises(ConfigError, match="pretrained_cf_dir.*export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": None}, DropoutNet)
    with pytest.raises(ConfigError, match="export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": str(tmp_path / "absent")}, DropoutNet)


def test_runs_end_to_end_on_exported_embeddings(tmp_path, toy_cf_folder):  # noqa: F811
    result = run_end_to_end("DropoutNet", tmp_path, pretrained_cf_dir=str(toy_cf_folder))
    assert result["model"] == "DropoutNet" and result["epochs_trained"] == 2
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
