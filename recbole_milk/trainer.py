"""Trainer for every model the plugin runs: safe checkpoints, resumable runs, new-item ranking, groups."""
import copy
import importlib
import os
import shutil
import time
import uuid
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Dict, Optional, Type

import torch
from recbole.evaluator import Collector, Evaluator
from recbole.trainer import Trainer
from recbole.utils import get_local_time
from recbole.utils import get_trainer as recbole_get_trainer
from torch.utils.tensorboard import SummaryWriter

from recbole_milk import distributed
from recbole_milk.atomic import remove_empty_folder, remove_stale_temporaries, save_torch
from recbole_milk.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, plain_config
from recbole_milk.errors import ConfigError, UserInputError
from recbole_milk.evaluation import GroupMetricAccumulator
from recbole_milk.optim import DenseSparseAdam, sparse_embedding_weights
from recbole_milk.options import LIST_METRICS
from recbole_milk.parallel_trainer import (
    NullTensorBoard,
    ShardedEvaluationMixin,
    shared_checkpoint,
)
from recbole_milk.ranking import CandidateRankingMixin
from recbole_milk.resume import (
    RESUME_LATEST,
    capture_random_state,
    find_resume_point,
    load_for_resume,
    process_random_state,
    restore_random_state,
    resume_file_name,
    resume_section,
    run_fingerprint,
)

RECBOLE_TENSORBOARD_DIR = "log_tensorboard"


class TrainingDivergedError(UserInputError):
    """The training loss became NaN or infinite; the message says what to change."""


class NewItemTrainerMixin(CandidateRankingMixin, ShardedEvaluationMixin):
    """Adds to any RecBole trainer: unique checkpoint names, checkpoints that load with weights_only=True,
    resumable runs, an actionable error when training diverges, a configurable tensorboard folder,
    candidate-restricted full ranking with random tie-breaking, per-group metrics, RecBole's list metrics over the
    candidates (ItemCoverage, AveragePopularity, GiniIndex, TailPercentage) and epoch timing.

    Besides the best-model checkpoint (`saved_model_file`, written on validation improvement as in RecBole), a run
    keeps a resume point (`resume_file`, see recbole_milk/resume.py) rewritten after every evaluation. It is deleted
    when training finishes, so resume points mark unfinished runs.

    In a multi-process run (recbole_milk.distributed) every process starts from rank 0's weights, the optimiser
    averages gradients (and clips the average), evaluation is split across the processes and gathered, and only
    rank 0 writes.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        # TraditionalTrainer lowers epochs to 1 after the base class fixed eval_step; without this a model such as
        # Pop would never be evaluated (or checkpointed) under the plugin's eval_step of 10.
        self.eval_step = min(self.eval_step, self.epochs)
        if distributed.is_distributed():
            self.clip_grad_norm = None  # GradientAveragingOptimizer clips the averaged gradient instead
        # One name for the run's files on every process: rank 0's.
        name = distributed.broadcast_object(
            f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:8]}")
        self.saved_model_file = os.path.join(self.checkpoint_dir, f"{name}.pth")
        self.resume_file = os.path.join(self.checkpoint_dir, resume_file_name(name, run_fingerprint(config)))
        for path in remove_stale_temporaries(self.checkpoint_dir):
            self.logger.info(f"Removed {path}, a temporary file left by a killed run")
        self._redirect_tensorboard(config, name)
        self.epoch_seconds = []
        self.last_group_result: Dict[str, Dict[str, float]] = {}
        self.last_group_exposure: Dict[str, Dict[str, float]] = {}
        self.last_new_item_share: Dict[str, float] = {}
        # The validation of the saved (best) model, so that it need not be evaluated again after training.
        self.best_evaluation: Optional[Dict[str, Any]] = None
        self._last_evaluation: Optional[Dict[str, Any]] = None
        self._ranking_metrics: Optional[GroupMetricAccumulator] = None
        self._has_groups = False
        self._train_item_counts: Optional[torch.Tensor] = None
        self._use_accuracy_evaluator(config)
        self._candidate_items: Optional[torch.Tensor] = None
        self._candidate_ids: Optional[torch.Tensor] = None
        self._candidate_position: Optional[torch.Tensor] = None
        # On CUDA the tie-breaking noise is drawn on the GPU (recbole_milk.ranking seeds it per batch).
        self._tie_generator = torch.Generator(device=self.device)
        self._tie_batch = 0
        self._epoch: Optional[int] = None
        self._resumed = False
        self._pending_loader_state: Optional[torch.Tensor] = None
        self._resume_every_save: Any = None
        distributed.broadcast_state(self.model)

    def _use_accuracy_evaluator(self, config) -> None:
        # RecBole's collector fails on the list metrics' inputs (it calls .cpu() on an int and a Counter) and would
        # count items outside the candidates; GroupMetricAccumulator computes them, RecBole the accuracy metrics.
        accuracy = [metric for metric in config["metrics"] if metric.lower() not in LIST_METRICS]
        if len(accuracy) == len(config["metrics"]):
            return
        view = copy.copy(config)
        view.final_config_dict = dict(config.final_config_dict, metrics=accuracy)
        self.eval_collector = Collector(view)
        self.evaluator = Evaluator(view)

    def _redirect_tensorboard(self, config, name: str) -> None:
        # RecBole's Trainer always opens ./log_tensorboard/<run>; move it to the configured folder (rank 0 only).
        target_root = config["tensorboard_dir"] or RECBOLE_TENSORBOARD_DIR
        writer = distributed.is_writer()
        if writer and os.path.abspath(target_root) == os.path.abspath(RECBOLE_TENSORBOARD_DIR):
            return
        default_dir = self.tensorboard.log_dir
        self.tensorboard.close()
        shutil.rmtree(default_dir, ignore_errors=True)
        remove_empty_folder(RECBOLE_TENSORBOARD_DIR)
        self.tensorboard = SummaryWriter(os.path.join(target_root, name)) if writer else NullTensorBoard()

    def _build_optimizer(self, **kwargs):
        # Models with sparse-gradient embedding tables (MILK's sparse_user_gradients, which the model may leave to
        # the trainer to switch on) get lazy Adam on those tables; the options it cannot combine with (learner,
        # weight_decay, clip_grad_norm) are rejected by the Config when asked for explicitly.
        if getattr(self.model, "lazy_user_updates", False):
            self.model.use_lazy_updates()
        params = list(kwargs.pop("params", self.model.parameters()))
        sparse_ids = {id(weight) for weight in sparse_embedding_weights(self.model)}
        sparse = [p for p in params if id(p) in sparse_ids]
        if not sparse:
            optimizer = super()._build_optimizer(params=params, **kwargs)
        else:
            dense = [p for p in params if id(p) not in sparse_ids]
            optimizer = DenseSparseAdam(dense, sparse, lr=kwargs.pop("learning_rate", self.learning_rate))
        if not distributed.is_distributed():
            return optimizer
        return distributed.GradientAveragingOptimizer(optimizer, params, sparse, self.config["clip_grad_norm"])

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch = epoch_idx
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    # ----- divergence -----

    def _check_nan(self, loss):
        if bool(torch.isfinite(loss).all()):
            return
        raise TrainingDivergedError(self._divergence_message("nan" if bool(torch.isnan(loss).any()) else "infinite"))

    def _divergence_message(self, value: str) -> str:
        options = self.config.final_config_dict
        weights = {key: option for key, option in options.items() if key.endswith("_weight")
                   and isinstance(option, (int, float)) and not isinstance(option, bool) and option > 0}
        advice = [f"lower learning_rate (now {self.config['learning_rate']})"]
        if weights:
            advice.append("check the loss weights (" + ", ".join(f"{k}={v}" for k, v in sorted(weights.items())) + ")")
        advice.append("check the feature files for very large values and rescale or L2-normalise them")
        if not self.config["clip_grad_norm"]:
            # Clipping needs dense gradients: with it, lazy Adam's tables (sparse_user_gradients: auto) go dense.
            lazy = " (the user table then trains with dense Adam)" if sparse_embedding_weights(self.model) else ""
            advice.append("set clip_grad_norm, e.g. {max_norm: 5}" + lazy)
        message = (f"Training loss is {value} at epoch {self._epoch} (model {self.config['model']}, dataset "
                   f"{self.config['dataset']}): training diverged and was stopped. Try: " + "; ".join(advice) + ".")
        if os.path.isfile(self.resume_file):
            message += (f" The last good state is {self.resume_file}; after the fix, continue from it with "
                        f"resume_from: {self.resume_file}")
        return message

    # ----- checkpoints and resume points -----

    def _checkpoint_state(self, epoch: int) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": plain_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def save_best_model(self) -> None:
        """Rewrite the best-model checkpoint with the model as it is now (e.g. after fitting calibration)."""
        if distributed.is_writer():
            checkpoint = load_checkpoint(self.saved_model_file, self.device)
            checkpoint["state_dict"] = self.model.state_dict()
            save_torch(self.saved_model_file, checkpoint)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # RecBole saves right after the validation that improved: that evaluation is the best model's.
        last = self._last_evaluation
        self.best_evaluation = last if last is not None and last["epoch"] == epoch else None
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if distributed.is_writer():
            save_torch(saved_model_file, self._checkpoint_state(epoch))
            if verbose:
                self.logger.info(f"Saving current: {saved_model_file}")
        # Without validation RecBole saves after every epoch and never calls back: keep the resume point in step.
        if self._resume_every_save is not None and epoch >= 0:
            self._save_resume_point(epoch, self._resume_every_save)

    def _save_resume_point(self, epoch: int, train_data: Any) -> None:
        # Every process's random streams (its own negatives and modality draws), kept by rank 0.
        random_states = distributed.gather_objects(capture_random_state(self.model, train_data))
        if not distributed.is_writer():
            return
        state = self._checkpoint_state(epoch)
        state["best_valid_result"] = {key: float(value) for key, value in (self.best_valid_result or {}).items()}
        state["resume"] = resume_section(self.config, self.saved_model_file, self.cur_step > self.stopping_step,
                                         self.epoch_seconds, random_states)
        save_torch(self.resume_file, state)

    def _remove_resume_point(self) -> None:
        if distributed.is_writer() and os.path.exists(self.resume_file):
            os.remove(self.resume_file)

    def resume_checkpoint(self, resume_file):
        """Continue training from a resume point (bit-identical continuation) or, as RecBole does, from a
        best-model checkpoint (new bests then overwrite it; the random streams start afresh)."""
        resume_file = str(resume_file)
        checkpoint = shared_checkpoint(lambda device: load_for_resume(resume_file, self.config, device), self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        resume = checkpoint.get("resume")
        if resume is None:
            self.saved_model_file = resume_file
            self.logger.warning(f"{resume_file} is a best-model checkpoint, not a resume point: training continues "
                                "from it, but its random streams start afresh, so the run will differ from an "
                                "uninterrupted one.")
        else:
            self.resume_file = resume_file
            self.saved_model_file = os.path.join(os.path.dirname(resume_file), resume["best_model_file"])
            self.epoch_seconds = list(resume["epoch_seconds"])
            if resume["stopped"]:
                self.start_epoch = max(self.start_epoch, self.epochs)
            random_state = process_random_state(resume, self.logger)
            restore_random_state(random_state, self.model)
            self._pending_loader_state = random_state["train_loader"]
            if resume["fingerprint"] != run_fingerprint(self.config):
                self.logger.warning(f"{resume_file} was written under other options; training continues with this "
                                    "run's options.")
        self._resumed = True
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")

    def _resume_from_option(self) -> None:
        value = self.config["resume_from"]
        if not value:
            return
        if not self._runs_recboles_loop():
            raise ConfigError(f"Option 'resume_from' = {value!r} is not supported for model {self.config['model']}: "
                              f"its trainer {type(self).__name__} has its own training loop; set resume_from: ~.")
        if value == RESUME_LATEST:
            found = find_resume_point(self.checkpoint_dir, run_fingerprint(self.config)) if distributed.is_writer() \
                else None
            value = distributed.broadcast_object(found)
            if value is None:
                self.logger.info(f"resume_from: latest found no unfinished run with these options in "
                                 f"{self.checkpoint_dir}; starting clean.")
                return
        self.resume_checkpoint(value)

    def _runs_recboles_loop(self) -> bool:
        """True when fit() is RecBole's Trainer.fit, whose callback and checkpoint hooks resuming relies on."""
        mro = type(self).__mro__
        for cls in mro[mro.index(NewItemTrainerMixin) + 1:]:
            if "fit" in vars(cls):
                return cls is Trainer
        return False

    # ----- training and evaluation -----

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        dataset = train_data._dataset
        # The popularity of the list metrics, as RecBole's collector takes it: training interactions per item.
        self._train_item_counts = torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=dataset.item_num)
        self._resume_from_option()
        if self._pending_loader_state is not None and isinstance(getattr(train_data, "generator", None),
                                                                 torch.Generator):
            train_data.generator.set_state(self._pending_loader_state.cpu())
        self._pending_loader_state = None
        if not self._runs_recboles_loop():
            extra = {"callback_fn": callback_fn} if callback_fn is not None else {}
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                               **extra)

        def after_evaluation(epoch_idx, valid_score):
            if saved:
                self._save_resume_point(epoch_idx, train_data)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)

        # A resumed run with nothing left to train must not overwrite the best checkpoint with its last state.
        finished = self._resumed and self.start_epoch >= self.epochs
        self._resume_every_save = train_data if saved and (self.eval_step <= 0 or not valid_data) else None
        try:
            result = super().fit(train_data, valid_data, verbose=verbose, saved=saved and not finished,
                                 show_progress=show_progress, callback_fn=after_evaluation)
        finally:
            self._resume_every_save = None
        self._remove_resume_point()
        return result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = shared_checkpoint(lambda device: load_checkpoint(checkpoint_file, device), self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self._start_ranking(eval_data)
        try:
            if distributed.is_distributed():
                result = self._evaluate_in_blocks(eval_data)
            else:
                result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            accumulator, self._ranking_metrics = self._ranking_metrics, None
        decimals = self.config["metric_decimal_place"]
        groups = accumulator is not None and self._has_groups
        self.last_group_result = accumulator.result(decimals) if groups else {}
        self.last_group_exposure = accumulator.exposure(decimals) if groups else {}
        self.last_new_item_share = accumulator.new_item_share(decimals) if accumulator else {}
        if result is not None and accumulator is not None and accumulator.list_metrics:
            result = self._in_metric_order(result, accumulator.list_result(decimals))
        self._last_evaluation = {"epoch": self._epoch, "result": result, "groups": self.last_group_result,
                                 "exposure": self.last_group_exposure, "new_item_share": self.last_new_item_share}
        return result

    def _in_metric_order(self, accuracy: Dict[str, float], lists: Dict[str, float]) -> "OrderedDict[str, float]":
        """RecBole's accuracy results and the plugin's list metrics in one result, in the order of `metrics`."""
        merged = OrderedDict()
        for metric in self.config["metrics"]:
            name = metric.lower()
            source = lists if name in LIST_METRICS else accuracy
            merged.update((key, value) for key, value in source.items() if key.split("@")[0] == name)
        return merged


class NewItemTrainer(NewItemTrainerMixin, Trainer):
    """RecBole's Trainer with the plugin's additions."""


@lru_cache(maxsize=None)
def _with_mixin(base: Type) -> Type:
    if issubclass(base, NewItemTrainerMixin):
        return base
    if base is Trainer:
        return NewItemTrainer
    return type(f"NewItem{base.__name__}", (NewItemTrainerMixin, base), {})


def get_trainer(model_type: Any, model_name: str) -> Type:
    """The trainer class for a model: `recbole_milk.trainer.<Model>Trainer` if the plugin defines one, else
    RecBole's choice; either way with NewItemTrainerMixin mixed in."""
    plugin_trainer = getattr(importlib.import_module(__name__), f"{model_name}Trainer", None)
    base = plugin_trainer or recbole_get_trainer(model_type, model_name)
    return _with_mixin(base)
