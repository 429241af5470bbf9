"""Trainer for every model the plugin runs: checkpoints that load on current torch, new-item ranking, groups."""
import importlib
import os
import shutil
import time
import uuid
from functools import lru_cache
from typing import Any, Optional, Type

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.trainer import Trainer
from recbole.utils import get_local_time
from recbole.utils import get_trainer as recbole_get_trainer
from torch.utils.tensorboard import SummaryWriter

from recbole_milk.atomic import atomic_write, remove_stale_temporaries
from recbole_milk.evaluation import GroupMetricAccumulator, break_ties_at_random, restrict_to_candidates

RECBOLE_TENSORBOARD_DIR = "log_tensorboard"


def load_checkpoint(path: str, device: Any = "cpu") -> dict:
    """Load a checkpoint this plugin wrote. It pickles the Config, so torch>=2.6's weights_only must be off;
    only load files you trust."""
    return torch.load(path, map_location=device, weights_only=False)


def atomic_torch_save(state: dict, path: str) -> None:
    """Write to a temporary file beside `path`, then rename, so a killed run never leaves a torn checkpoint."""
    with atomic_write(path) as handle:
        torch.save(state, handle, pickle_protocol=4)


class NewItemTrainerMixin:
    """Adds to any RecBole trainer: unique checkpoint names, loading on torch>=2.6, configurable tensorboard
    folder, candidate-restricted full ranking with random tie-breaking, per-group metrics and epoch timing."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # TraditionalTrainer lowers epochs to 1 after the base class fixed eval_step; without this a model such as
        # Pop would never be evaluated (or checkpointed) under the plugin's eval_step of 10.
        self.eval_step = min(self.eval_step, self.epochs)
        name = f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:8]}"
        self.saved_model_file = os.path.join(self.checkpoint_dir, f"{name}.pth")
        for path in remove_stale_temporaries(self.checkpoint_dir):
            self.logger.info(f"Removed {path}, a temporary file left by a killed run")
        self._redirect_tensorboard(config, name)
        self.epoch_seconds = []
        self.last_group_result = {}
        self._group_metrics: Optional[GroupMetricAccumulator] = None
        self._candidate_items: Optional[torch.Tensor] = None
        self._tie_generator = torch.Generator()

    def _redirect_tensorboard(self, config, name: str) -> None:
        # RecBole's Trainer always opens ./log_tensorboard/<run>; move it to the configured folder.
        target_root = config["tensorboard_dir"] or RECBOLE_TENSORBOARD_DIR
        if os.path.abspath(target_root) == os.path.abspath(RECBOLE_TENSORBOARD_DIR):
            return
        default_dir = self.tensorboard.log_dir
        self.tensorboard.close()
        shutil.rmtree(default_dir, ignore_errors=True)
        if os.path.isdir(RECBOLE_TENSORBOARD_DIR) and not os.listdir(RECBOLE_TENSORBOARD_DIR):
            os.rmdir(RECBOLE_TENSORBOARD_DIR)
        self.tensorboard = SummaryWriter(os.path.join(target_root, name))

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        checkpoint = load_checkpoint(str(resume_file), self.device)
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self._start_ranking(eval_data)
        try:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            accumulator, self._group_metrics = self._group_metrics, None
        self.last_group_result = accumulator.result(self.config["metric_decimal_place"]) if accumulator else {}
        return result

    def _start_ranking(self, eval_data) -> None:
        # The same seed gives the same tie-breaks in every evaluation, independent of training's RNG state.
        self._tie_generator.manual_seed(int(self.config["seed"]))
        self._candidate_items = getattr(eval_data, "candidate_items", None)
        dataset = eval_data._dataset
        item_group = getattr(dataset, "item_group", None)
        names = getattr(dataset, "item_group_names", None)
        self._group_metrics = None
        if isinstance(eval_data, FullSortEvalDataLoader) and item_group is not None and names:
            self._group_metrics = GroupMetricAccumulator(item_group, names, self.config["topk"],
                                                         self.config["metrics"])

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        scores = restrict_to_candidates(scores, self._candidate_items)
        scores = break_ties_at_random(scores, self._tie_generator)
        if self._group_metrics is not None:
            self._group_metrics.update(scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i


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
