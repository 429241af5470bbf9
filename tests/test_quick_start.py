import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures import write_toy_dataset
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.general_recommender import Random
from recbole.utils import InputType

from recbole_milk.checkpoint import CHECKPOINT_FORMAT
from recbole_milk.config import Config
from recbole_milk.data.utils import create_dataset, scoped_data_preparation
from recbole_milk.errors import ConfigError
from recbole_milk.quick_start import (
    load_data_and_model,
    objective_function,
    run_recbole_milk,
)
from recbole_milk.trainer import get_trainer

HYPER_KEYS = {"model", "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
RECBOLE_RANKING_METRICS = ["Recall", "NDCG", "Hit", "MRR", "Precision", "MAP", "ItemCoverage", "AveragePopularity",
                           "GiniIndex", "TailPercentage"]
SCOPES = ["new", "warm", "all"]


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


def test_milk_trains_its_user_table_with_lazy_adam_by_default_and_reloads(toy):
    result = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    states = checkpoint["optimizer"]["optimizers"]  # dense Adam, then lazy Adam on the user table
    assert len(states) == 2 and len(states[1]["param_groups"][0]["params"]) == 1
    _, model, _, _, _, _ = load_data_and_model(result["saved_model_file"])
    assert model.lazy_user_updates and result["test_result"]["ndcg@10"] >= 0
    dense = run_recbole_milk("MILK", toy["dataset"], config_dict=dict(toy, sparse_user_gradients=False))
    assert "optimizers" not in torch.load(dense["saved_model_file"], weights_only=True)["optimizer"]


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


# ----- evaluation scopes -----

def test_one_run_reports_every_scope_and_the_first_one_selects_the_model(toy):
    result = run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, eval_scopes=["warm", "new", "all"]))
    assert list(result["test_result_by_scope"]) == list(result["valid_result_by_scope"]) == ["warm", "new", "all"]
    assert result["test_result"] == result["test_result_by_scope"]["warm"]
    assert result["best_valid_result"] == result["valid_result_by_scope"]["warm"]
    assert result["test_result_by_group"] == result["test_result_by_scope_and_group"]["warm"]
    assert result["test_exposure_by_group"] == result["test_exposure_by_scope_and_group"]["warm"]
    for scope in SCOPES:
        assert set(result["test_result_by_scope"][scope]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
        assert set(result["test_result_by_scope_and_group"][scope]) <= {"complete", "missing_1"}
    assert result["test_result_by_scope"]["warm"] != result["test_result_by_scope"]["new"]
    share = result["test_new_item_share"]
    assert set(share) == {"new_item_share@10", "new_item_share@20", "candidate_share"}
    assert 0 < share["candidate_share"] < 1 and 0 <= share["new_item_share@10"] <= 1
    json.dumps(result)


def test_the_default_run_reports_the_new_scope_only(toy):
    result = run_recbole_milk("BPR", toy["dataset"], config_dict=toy)
    assert result["test_result_by_scope"] == {"new": result["test_result"]}
    assert result["test_result_by_scope_and_group"] == {"new": result["test_result_by_group"]}
    assert result["test_new_item_share"] is None


def _synthetic_dataset(root: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "dataset_prep" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("synthetic", script)
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    synthetic.generate(synthetic.SyntheticSpec(users=300, items=200, interactions=6000, factors=8, dims=[16, 16],
                                               noise=[0.1, 2.0]), root, "syn", log=lambda _: None)


def _synthetic_config(tmp_path: Path) -> dict:
    return dict(data_path=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "saved"), log_dir=str(tmp_path / "log"),
                tensorboard_dir=str(tmp_path / "tb"), show_progress=False, state="WARNING", eval_scopes=SCOPES,
                cold_item_ratio=0.4, topk=[10], metrics=["Recall", "Hit"], valid_metric="Recall@10")


class ConstantScorer(GeneralRecommender):
    """Scores every item the same: whatever order its ranking has comes from the trainer's tie-breaking."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.unused.sum()

    def predict(self, interaction):
        return torch.zeros(len(interaction))

    def full_sort_predict(self, interaction):
        return torch.zeros(len(interaction) * self.n_items)


def random_ranking_expectation(loader, k):
    """{metric: (mean, standard deviation of that mean)} of Recall@k and Hit@k over the loader's users under a
    uniformly random ranking of the candidates: of a user's n rankable candidates (candidates less history), the
    top min(k, n) hold a hypergeometric number of her p positives."""
    candidates = loader.candidate_items
    recall, hit = [], []
    for user in loader.uid_list.tolist():
        n = int(candidates.sum()) - int(candidates[loader.uid2history_item[user]].sum())
        p, shown = len(loader.uid2positive_item[user]), min(k, n)
        variance = shown * p / n * (n - p) / n * (n - shown) / max(n - 1, 1)
        recall.append((shown / n, variance / p ** 2))
        miss = math.comb(n - p, shown) / math.comb(n, shown)
        hit.append((1 - miss, miss * (1 - miss)))
    return {name: (np.mean([m for m, _ in values]), math.sqrt(sum(v for _, v in values)) / len(values))
            for name, values in ((f"recall@{k}", recall), (f"hit@{k}", hit))}


def test_a_constant_scorer_equals_random_in_every_scope(tmp_path):
    # Popular items come first in the file, so they get low ids: a scorer whose ties fell by id would beat Random.
    _synthetic_dataset(tmp_path / "data")
    # (model, repeats, eval_batch_size): RecBole's Random gives every user of a batch the same random order, so it
    # is evaluated one user per batch.
    for model, repeats, batch_size in ((ConstantScorer, 4, 2 ** 20), (Random, 2, 1)):
        config = Config(model="Random", dataset="syn", config_dict=dict(_synthetic_config(tmp_path),
                                                                         eval_batch_size=batch_size))
        train_data, loaders = scoped_data_preparation(config, create_dataset(config))
        torch.manual_seed(0)
        trainer = get_trainer(config["MODEL_TYPE"], "Random")(config, model(config, train_data._dataset))
        for scope in SCOPES:
            test_data = loaders[scope][1]
            results = []
            for seed in range(repeats):
                config["seed"] = seed  # the tie-breaks of the constant scorer
                results.append(trainer.evaluate(test_data, load_best_model=False))
            for metric, (mean, error) in random_ranking_expectation(test_data, 10).items():
                observed = np.mean([result[metric] for result in results])
                # 4.5 standard errors of a mean over `repeats` random rankings of every user.
                assert abs(observed - mean) < 4.5 * error / math.sqrt(repeats), (model, scope, metric, observed, mean)


def test_an_id_only_model_scores_like_random_on_new_items_and_above_it_on_warm_items(tmp_path):
    _synthetic_dataset(tmp_path / "data")
    config_dict = dict(_synthetic_config(tmp_path), epochs=20, eval_step=20, train_batch_size=256, learning_rate=0.01)
    config = Config(model="BPR", dataset="syn", config_dict=config_dict)
    _, loaders = scoped_data_preparation(config, create_dataset(config))
    result = run_recbole_milk("BPR", "syn", config_dict=config_dict)["test_result_by_scope"]
    # BPR's new-item embeddings never get a gradient: new items are neither its positives nor its negatives.
    mean, error = random_ranking_expectation(loaders["new"][1], 10)["recall@10"]
    assert abs(result["new"]["recall@10"] - mean) < max(6 * error, 0.03)
    warm_mean, _ = random_ranking_expectation(loaders["warm"][1], 10)["recall@10"]
    assert result["warm"]["recall@10"] > 1.5 * warm_mean


@pytest.mark.parametrize("model", ["MILK", "BPR"])  # candidate_scores, and RecBole's full_sort_predict cut
def test_ranking_only_the_candidates_gives_the_full_ranking_s_metrics(toy, monkeypatch, model):
    from recbole_milk.trainer import NewItemTrainerMixin, get_trainer

    result = run_recbole_milk(model, toy["dataset"], config_dict=dict(toy, metrics=["Recall", "NDCG", "ItemCoverage"], topk=[5], valid_metric="NDCG@5"))
    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    candidate_only = trainer.evaluate(test_data, load_best_model=False)
    assert trainer._candidate_ids is not None  # fewer candidates than items: only they were scored
    groups, exposure = trainer.last_group_result, trainer.last_group_exposure
    monkeypatch.setattr(NewItemTrainerMixin, "_rank_candidates_only",
                        lambda self, eval_data: setattr(self, "_candidate_ids", None))  # every item scored
    full = trainer.evaluate(test_data, load_best_model=False)
    assert trainer._candidate_ids is None
    assert dict(candidate_only) == dict(full) and trainer.last_group_result == groups
    assert trainer.last_group_exposure == exposure


def test_groups_by_missing_pattern_split_the_missing_one_group(toy):
    by_count = run_recbole_milk("MILK", toy["dataset"], config_dict=dict(toy, epochs=1), saved=False)
    by_pattern = run_recbole_milk("MILK", toy["dataset"], config_dict=dict(toy, epochs=1, item_groups="pattern"),
                                  saved=False)
    patterns = {name: metrics["users"] for name, metrics in by_pattern["test_result_by_group"].items()}
    assert set(patterns) <= {"complete", "missing_visual", "missing_acoustic", "missing_visual+acoustic"}
    assert by_pattern["test_result"] == by_count["test_result"]  # grouping changes the report, not the ranking
    assert by_pattern["test_result_by_group"]["complete"] == by_count["test_result_by_group"]["complete"]
    assert set(by_pattern["test_exposure_by_group"]) - {"complete"}


def test_the_best_validation_is_kept_from_training_not_evaluated_again(toy, monkeypatch):
    from recbole_milk.trainer import NewItemTrainerMixin, get_trainer

    calls = []
    evaluate = NewItemTrainerMixin.evaluate
    monkeypatch.setattr(NewItemTrainerMixin, "evaluate", lambda self, data, *args, **kwargs:
                        calls.append(data.phase) or evaluate(self, data, *args, **kwargs))
    result = run_recbole_milk("MILK", toy["dataset"], config_dict=toy)  # 4 epochs, validation every 2
    assert calls == ["valid", "valid", "test"]
    config, model, _, _, valid_data, _ = load_data_and_model(result["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(valid_data, load_best_model=False)
    assert {key: float(value) for key, value in again.items()} == result["best_valid_result"]
    assert trainer.last_group_result == result["valid_result_by_group"]
    assert trainer.last_group_exposure == result["valid_exposure_by_group"]
