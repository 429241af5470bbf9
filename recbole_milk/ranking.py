"""Full-sort evaluation of the plugin's trainer: the scope's candidates only, random tie-breaking, group metrics.

A mixin of NewItemTrainerMixin (recbole_milk.trainer), which creates the attributes it reads: _candidate_items,
_candidate_ids, _candidate_position, _tie_generator, _tie_batch, _ranking_metrics, _has_groups and
_train_item_counts.
"""
import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_milk import distributed
from recbole_milk.data.roles import ROLE_TEST, ROLE_VALID
from recbole_milk.evaluation import (
    GroupMetricAccumulator,
    rank_with_random_ties,
    restrict_to_candidates,
)


class CandidateRankingMixin:
    """RecBole trainer methods that rank the scope's candidate items and keep per-group metrics on the way."""

    def _start_ranking(self, eval_data) -> None:
        # The same seed gives the same tie-breaks in every evaluation, independent of training's RNG state.
        self._tie_batch = 0
        candidates = getattr(eval_data, "candidate_items", None)
        # Moved once per evaluation, not once per batch.
        self._candidate_items = None if candidates is None else candidates.to(self.device)
        self._rank_candidates_only(eval_data)
        dataset = eval_data._dataset
        self._ranking_metrics = None
        if not isinstance(eval_data, FullSortEvalDataLoader):
            return
        grouping = getattr(dataset, "item_groups", None)
        item_group, names = grouping(self.config["item_groups"]) if callable(grouping) else (None, None)
        self._has_groups = item_group is not None and bool(names)
        if not self._has_groups:  # one group of every item: the list metrics and the new-item share need no groups
            item_group, names = torch.zeros(dataset.item_num, dtype=torch.long), ["items"]
        role = getattr(dataset, "item_role", None)
        self._ranking_metrics = GroupMetricAccumulator(
            item_group, names, self.config["topk"], self.config["metrics"], self._candidate_items,
            item_counts=getattr(dataset, "train_item_counts", self._train_item_counts),
            new_items=None if role is None else (role == ROLE_VALID) | (role == ROLE_TEST),
            tail_ratio=self.config["tail_ratio"])

    def _rank_candidates_only(self, eval_data) -> None:
        """Rank only the candidate columns when there are fewer candidates than items (and at least max(topk)):
        the ranking is the same, and scoring, tie-breaking and top-K cost candidates, not items."""
        self._candidate_ids = self._candidate_position = None
        if self._candidate_items is None or not isinstance(eval_data, FullSortEvalDataLoader):
            return
        candidates = self._candidate_items.clone()
        candidates[0] = False  # RecBole's padding item
        ids = torch.nonzero(candidates).squeeze(1)
        if len(ids) == len(candidates) - 1 or len(ids) < max(self.config["topk"]):
            return
        self._candidate_ids = ids
        self._candidate_position = torch.full((len(candidates),), -1, dtype=torch.long, device=ids.device)
        self._candidate_position[ids] = torch.arange(len(ids), device=ids.device)

    def _next_tie_generator(self) -> torch.Generator:
        """The tie-breaking generator of the next evaluation batch, seeded by the run's seed and the batch's place:
        a batch's ties break alike wherever it is scored, and a process of a multi-process evaluation skips the
        batches of the others without drawing for them (skip_tie_batch)."""
        self._tie_generator.manual_seed((int(self.config["seed"]) * 1_000_003 + self._tie_batch) % 2 ** 63)
        self._tie_batch += 1
        return self._tie_generator

    def skip_tie_batch(self) -> None:
        self._tie_batch += 1

    def _candidate_batch_scores(self, batched_data):
        """(interaction, scores over the candidates (users x C), positives as (row, item id)) with the user's
        history at -inf, as RecBole's _full_sort_batch_eval gives them over all items."""
        interaction, history_index, positive_u, positive_i = batched_data
        interaction = interaction.to(self.device)
        if hasattr(self.model, "candidate_scores"):
            scores = self.model.candidate_scores(interaction, self._candidate_ids)
        else:
            full = super()._full_sort_batch_eval((interaction, None, positive_u, positive_i))[1]
            scores = full.index_select(1, self._candidate_ids)
        if history_index is not None:
            rows, items = history_index
            columns = self._candidate_position[items.to(self.device)]
            kept = columns >= 0
            scores[rows.to(self.device)[kept], columns[kept]] = float("-inf")
        return interaction, scores, positive_u, positive_i

    def _full_sort_batch_eval(self, batched_data):
        if self._candidate_ids is None:
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
            scores = restrict_to_candidates(scores, self._candidate_items)
            columns, ranked_i = None, positive_i
        else:
            interaction, scores, positive_u, positive_i = self._candidate_batch_scores(batched_data)
            columns = self._candidate_ids
            ranked_i = self._candidate_position[positive_i.to(self.device)].to(positive_i.device)
            if bool((ranked_i < 0).any()):
                raise RuntimeError("An evaluation positive is not among the candidate items; the scope's candidates "
                                   "must hold every item it evaluates (recbole_milk/data/scopes.py).")
        scores, top = rank_with_random_ties(scores, self._next_tie_generator(), depth=max(self.config["topk"]))
        if self._ranking_metrics is not None:
            if distributed.is_distributed():  # added on every process once all have scored (_evaluate_in_blocks)
                self._ranking_metrics.record(scores, positive_u, positive_i, columns, top)
            else:
                self._ranking_metrics.update(scores, positive_u, positive_i, columns, top)
        # RecBole's collector sees the candidate columns: its positives are their column positions.
        return interaction, scores, positive_u, ranked_i
