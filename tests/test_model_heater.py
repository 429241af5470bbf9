"""Heater: mixture-of-experts content-to-CF alignment with randomized training (Zhu et al. 2020)."""
import pytest
import torch

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
from recbole_milk.model.heater import Heater, MixtureOfExperts
from recbole_milk.options import ConfigError, validate_options


@pytest.fixture
def cf_folder(tmp_path):
    return str(write_pretrained(tmp_path / "cf", make_dataset()))


def model_with(cf_folder, **overrides):
    return make_model(Heater, pretrained_cf_dir=cf_folder, **overrides)


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
    check_yaml_defaults_pass_the_option_checks(Heater, pretrained_cf_dir=cf_folder)


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


def test_new_items_use_the_content_transform_and_warm_items_their_cf_row(cf_folder):
    model = model_with(cf_folder)
    model.eval()
    with torch.no_grad():
        items = model.item_representations()
        from_content = model.item_transform(model.content_experts(model.item_content))
        from_cf = model.item_transform(model.item_cf)
    assert torch.allclose(items[NEW], from_content[NEW])
    assert torch.allclose(items[WARM], from_cf[WARM])


def hand_loss(model, replaced: bool, align_weight: float) -> torch.Tensor:
    users, pos, neg = (torch.tensor(x) for x in TRAIN_BATCH)
    u_cf = model.user_cf[users]
    user_r = model.user_transform(u_cf)
    errors = []
    for items in (pos, neg):
        source = model.content_experts(model.item_content[items]) if replaced else model.item_cf[items]
        errors.append((user_r * model.item_transform(source)).sum(1) - (u_cf * model.item_cf[items]).sum(1))
    distinct = torch.unique(torch.cat([pos, neg]))
    align = (model.content_experts(model.item_content[distinct]) - model.item_cf[distinct]).pow(2).sum(1).mean()
    return torch.cat(errors).pow(2).mean() + align_weight * align


def test_loss_is_score_regression_plus_similarity_constraint(cf_folder):
    model = model_with(cf_folder, random_replace_rate=0.0, align_weight=0.7, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), hand_loss(model, False, 0.7), atol=1e-5)


def test_randomized_training_replaces_cf_rows_by_the_content_transform(cf_folder):
    model = model_with(cf_folder, random_replace_rate=0.999999, align_weight=0.0, reg_weight=0.0)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), hand_loss(model, True, 0.0), atol=1e-5)


def test_pretrained_embeddings_are_frozen_by_training(cf_folder):
    model = model_with(cf_folder)
    user_cf, item_cf = model.user_cf.clone(), model.item_cf.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert torch.equal(model.user_cf, user_cf) and torch.equal(model.item_cf, item_cf)


@pytest.mark.parametrize("key, value", [("num_experts", 0), ("random_replace_rate", 1.0), ("align_weight", -0.1)])
def test_invalid_options_are_rejected_with_the_key_named(cf_folder, key, value):
    with pytest.raises(ConfigError, match=key):
        model_with(cf_folder, **{key: value})


def test_missing_pretrained_folder_is_rejected_with_the_export_command():
    with pytest.raises(ConfigError, match="pretrained_cf_dir.*export_cf_embeddings.py"):
        validate_options({"pretrained_cf_dir": None}, Heater)


def test_runs_end_to_end_on_exported_embeddings(tmp_path, toy_cf_folder):  # noqa: F811
    result = run_end_to_end("Heater", tmp_path, pretrained_cf_dir=str(toy_cf_folder))
    assert result["model"] == "Heater" and result["epochs_trained"] == 2
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
