"""Run, tune and reload models on the plugin's new-item pipeline (the plugin's counterpart of recbole.quick_start)."""
import logging
import os
from logging import getLogger
from typing import Any, Dict, List, Optional, Tuple

import torch
from recbole.utils import init_seed

from recbole_milk import distributed
from recbole_milk.calibration import fit_calibration, worth_keeping
from recbole_milk.checkpoint import load_checkpoint, plain
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.config import Config
from recbole_milk.data.dataset import NewItemDataset
from recbole_milk.data.utils import create_dataset, data_preparation, scoped_data_preparation
from recbole_milk.errors import ConfigError
from recbole_milk.inference import artifact_path_for, write_artifact
from recbole_milk.launch import free_port, run_processes
from recbole_milk.logger import init_logger
from recbole_milk.model.abstract_recommender import (
    ContentRecommender,
    TwoStageRecommender,
)
from recbole_milk.options import process_count
from recbole_milk.parallel_trainer import shared_checkpoint
from recbole_milk.pretrained import attach_pretrained_cf
from recbole_milk.stage_one import ensure_stage_one
from recbole_milk.trainer import get_trainer
from recbole_milk.utils import get_model


def prepare_model_inputs(config: Config, train_data: Any) -> None:
    """What a model class needs on its dataset beyond the split: a two-stage model's frozen CF embeddings, from
    `pretrained_cf_dir` or from stage 1 (trained now, or reused from checkpoint_dir)."""
    if issubclass(get_model(config["model"]), TwoStageRecommender):
        config["pretrained_cf_dir"] = config["pretrained_cf_dir"] or ensure_stage_one(config, train_data)
        attach_pretrained_cf(train_data._dataset, config["pretrained_cf_dir"])


def _calibrate(trainer: Any, model: Any, valid_data: Any, new_valid_data: Any, config: Config,
               saved: bool) -> Optional[Dict[str, Any]]:
    """Fit per-pattern calibration on the best model and the new items' validation split, and keep it only if the
    validation ranking (the one model selection reads) is at least as good with it, or moves toward an asked-for
    pattern floor (calibration.worth_keeping): what was fitted, whether it was kept, and the validation result of
    the model that goes on to the test."""
    if not (isinstance(model, ContentRecommender) and model.calibrated):
        return None
    if saved:
        best = shared_checkpoint(lambda device: load_checkpoint(trainer.saved_model_file, device), trainer.device)
        model.load_state_dict(best["state_dict"])
    show = config["show_progress"]
    before = _plain_metrics(trainer.evaluate(valid_data, load_best_model=False, show_progress=show))
    summary = fit_calibration(model, new_valid_data, config)
    fitted = _plain_metrics(trainer.evaluate(valid_data, load_best_model=False, show_progress=show))
    metric = config["valid_metric"].lower()
    better = worth_keeping(summary, before[metric], fitted[metric], config["valid_metric_bigger"])
    if not better:
        model.reset_calibration()
    if saved:
        trainer.save_best_model()
    summary.update(kept=better, valid_result_fitted=fitted, valid_result=fitted if better else before)
    return summary


def _prepare(config: Config, dataset: Any) -> Tuple[Any, Dict[str, Tuple[Any, Any]]]:
    """(train loader, {scope: (valid, test)}); RecBole's own datasets have the new scope only."""
    if isinstance(dataset, NewItemDataset):
        return scoped_data_preparation(config, dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return train_data, {"new": (valid_data, test_data)}


def _evaluate(trainer: Any, loader: Any, saved: bool, config: Config) -> Dict[str, Any]:
    """The selected model on one loader: metrics, and per group metrics and exposure, and the new-item share."""
    result = trainer.evaluate(loader, load_best_model=saved, show_progress=config["show_progress"])
    return {"result": _plain_metrics(result), "groups": trainer.last_group_result,
            "exposure": trainer.last_group_exposure, "new_item_share": trainer.last_new_item_share}


def _evaluated(evaluation: Dict[str, Any]) -> Dict[str, Any]:
    """_evaluate's answer from an evaluation the trainer kept (NewItemTrainerMixin.best_evaluation)."""
    return {"result": _plain_metrics(evaluation["result"]), "groups": evaluation["groups"],
            "exposure": evaluation["exposure"], "new_item_share": evaluation["new_item_share"]}


def _train_and_test(config: Config, saved: bool) -> Dict[str, Any]:
    logger = getLogger()
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, loaders = _prepare(config, dataset)
    scopes = list(config["eval_scopes"])
    # The first scope's validation ranking drives early stopping and model selection.
    valid_data, test_data = loaders[scopes[0]]
    prepare_model_inputs(config, train_data)

    # Each process its own streams (negatives, dropout); the model starts from rank 0's weights anyway.
    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    best_valid_result = _plain_metrics(best_valid_result)
    calibration = _calibrate(trainer, model, valid_data, loaders["new"][0], config, saved)
    if calibration is not None:
        # The model that is tested (and tuned on) is the calibrated one: its validation result counts.
        logger.info(f"valid result after calibration ({'kept' if calibration['kept'] else 'dropped'}): "
                    f"{calibration['valid_result_fitted']}")
        calibration["valid_result_before"] = best_valid_result
        best_valid_result = calibration["valid_result"]
        best_valid_score = best_valid_result[config["valid_metric"].lower()]
    # The selected model on every scope, per group too; validation first: what model selection may look at.
    valid, test = {}, {}
    for scope in scopes:
        # Training evaluated the saved model on the first scope's validation split already (unless calibrated).
        best = trainer.best_evaluation if saved and calibration is None and scope == scopes[0] else None
        valid[scope] = _evaluated(best) if best is not None else _evaluate(trainer, loaders[scope][0], saved, config)
        test[scope] = _evaluate(trainer, loaders[scope][1], saved, config)
    first = test[scopes[0]]
    artifact_file = None
    if saved and getattr(model, "servable", False) and distributed.is_writer():
        artifact_file = write_artifact(model, train_data._dataset, config, artifact_path_for(trainer.saved_model_file))
        logger.info(f"Serving artefact written to {artifact_file}")
    logger.info(f"best valid : {best_valid_result}")
    for scope in scopes:
        label = "" if scope == scopes[0] else f" [{scope}]"
        logger.info(f"test result{label}: {test[scope]['result']}")
        for group, metrics in test[scope]["groups"].items():
            logger.info(f"test result{label} [{group}]: {metrics} exposure {test[scope]['exposure'].get(group, {})}")
    if "all" in scopes:
        logger.info(f"new items in the all scope's top-K slots: {test['all']['new_item_share']}")
    epochs = len(trainer.epoch_seconds)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "valid_result_by_group": valid[scopes[0]]["groups"],
        "valid_exposure_by_group": valid[scopes[0]]["exposure"],
        "test_result": first["result"],
        "test_result_by_group": first["groups"],
        "test_exposure_by_group": first["exposure"],
        "valid_result_by_scope": {scope: valid[scope]["result"] for scope in scopes},
        "test_result_by_scope": {scope: test[scope]["result"] for scope in scopes},
        "test_result_by_scope_and_group": {scope: test[scope]["groups"] for scope in scopes},
        "test_exposure_by_scope_and_group": {scope: test[scope]["exposure"] for scope in scopes},
        "test_new_item_share": test["all"]["new_item_share"] if "all" in scopes else None,
        "calibration": calibration,
        "epochs_trained": epochs,
        "train_seconds_per_epoch": sum(trainer.epoch_seconds) / epochs if epochs else 0.0,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "artifact_file": artifact_file,
        "world_size": distributed.world_size(),
        "backend": distributed.backend(),
        "config": plain(config.final_config_dict),
    }


def run_recbole_milk(model: Any = "MILK", dataset: str = "ml-100k-mm", config_file_list: Optional[List[str]] = None,
                     config_dict: Optional[dict] = None, saved: bool = True) -> Dict[str, Any]:
    """Train `model` on `dataset` under the new-item protocol and evaluate it; return the run's result dict."""
    apply_numpy_aliases()
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if _launches(config):
        return _launch(model, dataset, config_file_list, config_dict, saved, config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    if distributed.is_distributed():
        logger.info(f"Multi-process run: world size {distributed.world_size()}, backend {distributed.backend()}, "
                    f"this process rank {distributed.rank()} on {config['device']}")
    return _train_and_test(config, saved)


def _launches(config: Config) -> bool:
    """True in the process the user started for a run of several processes: it starts them, it does not train."""
    return process_count(config.final_config_dict) > 1 and "local_rank" not in config.external_config_dict


def _launch(model: Any, dataset: str, config_file_list: Optional[List[str]], config_dict: Optional[dict],
            saved: bool, config: Config) -> Dict[str, Any]:
    """Run the training in `nproc` processes on this machine (the options were checked by `config`); rank 0's
    result, or None on a machine without rank 0."""
    port = config["port"] if config["port"] is not None else free_port(config["ip"])
    options = dict(config_dict or {}, world_size=process_count(config.final_config_dict), port=port)
    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // config["nproc"])
    return run_processes(_run_rank, config["nproc"], (model, dataset, config_file_list, options, saved, threads))


def _run_rank(local_rank: int, model: Any, dataset: str, config_file_list: Optional[List[str]], config_dict: dict,
              saved: bool, threads: Optional[int]) -> Dict[str, Any]:
    """One process of a multi-process run (recbole_milk.launch runs it)."""
    if threads is not None:  # the processes share the machine's cores instead of each taking all of them
        torch.set_num_threads(threads)
    return run_recbole_milk(model, dataset, config_file_list, dict(config_dict, local_rank=local_rank), saved)


def objective_function(config_dict: Optional[dict] = None, config_file_list: Optional[List[str]] = None,
                       saved: bool = True) -> Dict[str, Any]:
    """Objective for recbole.trainer.HyperTuning: one quiet run, returning the five keys it reads."""
    apply_numpy_aliases()
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    if process_count(config.final_config_dict) > 1:
        raise ConfigError(f"Option 'nproc' = {config['nproc']} (world_size {config['world_size']}) is invalid for "
                          "tuning: each trial is one process; run trials in parallel with run_hyper.py --tool=Ray, "
                          "or set nproc: 1.")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logging.getLogger().setLevel(logging.ERROR)
    result = _train_and_test(config, saved)
    return {key: result[key] for key in
            ("model", "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result")}


def load_data_and_model(model_file: str) -> Tuple[Any, Any, Any, Any, Any, Any]:
    """Rebuild (config, model, dataset, train_data, valid_data, test_data) from a checkpoint of this plugin.

    The Config is rebuilt from the options the run was given (stored as plain data in the checkpoint)."""
    apply_numpy_aliases()
    checkpoint = load_checkpoint(model_file)
    saved = checkpoint["config"]
    config = Config(model=saved["model"], dataset=saved["dataset"], config_dict=saved["given"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_model_inputs(config, train_data)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def _plain_metrics(result: Optional[dict]) -> Dict[str, float]:
    return {key: float(value) for key, value in (result or {}).items()}
