"""What a trainer does differently in a multi-process run (recbole_milk.distributed): checkpoints read by rank 0 and
sent to the others, gradient averaging in the optimiser, and evaluation split across the processes.

Evaluation: each process scores a contiguous block of the one-process evaluation batches, and the pieces RecBole's
collector and the group metrics keep per user (the top-K hits, the top-K items) are gathered and put back in batch
order, so every process computes the metrics of the whole ranking, the ones one process gets for the same weights.
Random tie-breaking seeds its generator per batch from the run's seed and the batch's place, so each batch gets the
noise it gets in one process, and a process skips the batches before its block without drawing for them.
"""
from typing import Any, Callable, Dict, Tuple

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import EvaluatorType

from recbole_milk import distributed

# The collector's entries that hold one row per evaluated user (or interaction); RecBole clears exactly these
# between evaluations. The others (item counts, ...) come from the training data and agree across processes.
PER_RANKING_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


class NullTensorBoard:
    """The TensorBoard writer of a process that does not write (every rank but 0)."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_hparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def batch_block(batches: int, rank: int, world: int) -> Tuple[int, int]:
    """[first, last) of the evaluation batches process `rank` scores: contiguous, in rank order, sizes within 1."""
    return rank * batches // world, (rank + 1) * batches // world


def shared_checkpoint(load: Callable[[Any], Dict[str, Any]], device: Any) -> Dict[str, Any]:
    """`load(device)` in a one-process run; in a multi-process run rank 0 loads it (onto the CPU) and sends it to
    the others, so only rank 0 reads the checkpoint folder and nobody reads a file that rank 0 is replacing."""
    if not distributed.is_distributed():
        return load(device)
    return distributed.broadcast_object(load("cpu") if distributed.is_writer() else None)


class ShardedEvaluationMixin:
    """Trainer methods for a multi-process evaluation. Needs RecBole's Trainer attributes and the plugin's tie
    generator and group-metric accumulator (recbole_milk.trainer.NewItemTrainerMixin)."""

    def _evaluate_in_blocks(self, eval_data: Any) -> Dict[str, float]:
        """RecBole's evaluation loop (Trainer.evaluate) over this process's block of batches, then every process's
        pieces in batch order: the metrics of the whole evaluation, equal on every process."""
        distributed.broadcast_state(self.model)  # every process scores with rank 0's weights and buffers
        self.model.eval()
        full = isinstance(eval_data, FullSortEvalDataLoader)
        eval_func = self._full_sort_batch_eval if full else self._neg_sample_batch_eval
        if full and self.item_tensor is None:
            self.item_tensor = eval_data._dataset.get_item_feature().to(self.device)
        if self.config["eval_type"] == EvaluatorType.RANKING:
            self.tot_item_num = eval_data._dataset.item_num
        first, last = batch_block(len(eval_data), distributed.rank(), distributed.world_size())
        for index, batched_data in enumerate(eval_data):
            if index >= last:
                break
            if index < first:
                if full:
                    self.skip_tie_batch()
                continue
            interaction, scores, positive_u, positive_i = eval_func(batched_data)
            self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        self.eval_collector.model_collect(self.model)
        struct = self.eval_collector.get_data_struct()
        pieces = distributed.gather_objects({key: struct[key] for key in PER_RANKING_KEYS if key in struct})
        for key in PER_RANKING_KEYS:
            parts = [piece[key] for piece in pieces if key in piece]
            if parts:
                struct.set(key, torch.cat(parts, dim=0))
        if self._ranking_metrics is not None:
            for batches in distributed.gather_objects(self._ranking_metrics.recorded):
                for batch in batches:
                    self._ranking_metrics.add(*batch)
        return self.evaluator.evaluate(struct)
