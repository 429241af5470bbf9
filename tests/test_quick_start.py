import json
from types import SimpleNamespace

import pytest
import torch
from fixtures import write_toy_dataset

from recbole_milk.checkpoint import CHECKPOINT_FORMAT
from recbole_milk.errors import ConfigError
from recbole_milk.quick_start import (
    load_data_and_model,
    objective_function,
    run_recbole_milk,
)

HYPER_KEYS = {"model", "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
RECBOLE_RANKING_METRICS = ["Recall", "NDCG", "Hit", "MRR", "Precision", "MAP", "ItemCoverage", "AveragePopularity",
                           "GiniIndex", "TailPercentage"]


@pytest.fixture
def toy(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=40, n_items=60, n_modalities=2)
    config.update(epochs=4, eval_step=2)
    return config


@pytest.mark.parametrize("model", ["MILK", "BPR", "LightGCN", "Pop", "Random"])
def test_objective_function_returns_the_keys_hypertuning_reads(toy, model):
    result = objective_function(dict(toy, model=model))
    assert set(result) == HYPER_KEYS
    assert result["model"] == model
    assert {"ndcg@10", "recall@20"} <= set(result["test_result"])
    assert result["valid_score_bigger"] is True


def test_run_reports_groups_epochs_and_a_json_config(toy):
    result = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    assert result["epochs_trained"] == 4
    assert result["train_seconds_per_epoch"] > 0
    assert set(result["test_result_by_group"]) <= {"complete", "missing_1"}
    assert result["test_result_by_group"], "FTMT leaves some new items complete and some missing one modality"
    json.dumps(result)  # every value is plain JSON
    assert result["config"]["model"] == "MILK" and result["config"]["missing_setting"] == "FTMT"


def test_every_recbole_ranking_metric_is_reported_overall_and_per_group(toy):
    result = run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, metrics=RECBOLE_RANKING_METRICS,
                                                                       valid_metric="GiniIndex@10"))
    assert list(result["test_result"]) == [f"{m.lower()}@{k}" for m in RECBOLE_RANKING_METRICS for k in (10, 20)]
    assert result["valid_score_bigger"] is False and "giniindex@10" in result["best_valid_result"]
    assert 0 < result["test_result"]["itemcoverage@10"] <= 1 and 0 <= result["test_result"]["giniindex@10"] < 1
    grouped = {f"{m.lower()}@{k}" for m in RECBOLE_RANKING_METRICS[:8] if m != "AveragePopularity" for k in (10, 20)}
    for metrics in result["test_result_by_group"].values():
        assert grouped <= set(metrics) and "tailpercentage@10" not in metrics
    json.dumps(result)


def test_checkpoints_hold_plain_data_and_load_with_weights_only(toy):
    result = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    checkpoint = result["saved_model_file"]
    state = torch.load(checkpoint, weights_only=True)  # loading runs no code
    assert state["format"] == CHECKPOINT_FORMAT and state["config"]["model"] == "MILK"
    assert state["config"]["given"]["data_path"] == toy["data_path"]
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(checkpoint)
    assert set(model.state_dict()) == set(state["state_dict"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["state_dict"][name])
    assert config["model"] == "MILK" and config["data_path"] == state["config"]["final"]["data_path"]
    assert len(test_data) > 0


def test_a_checkpoint_that_pickles_objects_is_refused_with_a_clear_message(toy, tmp_path):
    old = tmp_path / "old.pth"
    torch.save({"config": SimpleNamespace(model="MILK"), "state_dict": {}}, old)
    with pytest.raises(ConfigError, match="old.pth.*pickled objects.*Retrain"):
        load_data_and_model(str(old))
    with pytest.raises(ConfigError, match="resume_from.*old.pth.*pickled objects"):
        run_recbole_milk("MILK", toy["dataset"], config_dict=dict(toy, resume_from=str(old)))


def test_sparse_user_gradients_train_with_lazy_adam_and_reload(toy):
    result = run_recbole_milk("MILK", toy["dataset"], config_dict=dict(toy, sparse_user_gradients=True))
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    states = checkpoint["optimizer"]["optimizers"]  # dense Adam, then SparseAdam on the user table
    assert len(states) == 2 and len(states[1]["param_groups"][0]["params"]) == 1
    _, model, _, _, _, _ = load_data_and_model(result["saved_model_file"])
    assert model.user_embedding.sparse and result["test_result"]["ndcg@10"] >= 0


def test_reloaded_model_reproduces_the_test_metrics(toy):
    from recbole_milk.trainer import get_trainer

    result = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert {key: float(value) for key, value in again.items()} == result["test_result"]


def test_checkpoint_names_do_not_collide_within_a_second(toy):
    first = run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, epochs=1, eval_step=1))
    second = run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, epochs=1, eval_step=1))
    assert first["saved_model_file"] != second["saved_model_file"]


def test_runs_write_logs_and_tensorboard_where_configured(toy, tmp_path):
    run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, epochs=1, eval_step=1))
    assert any((tmp_path / "data" / "log").rglob("*.log"))
    assert any((tmp_path / "data" / "log_tensorboard").iterdir())
    assert not (tmp_path / "log").exists() and not (tmp_path / "log_tensorboard").exists()
    assert not (tmp_path / "saved").exists()


def test_same_seed_gives_identical_metrics(toy):
    first = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    second = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]
