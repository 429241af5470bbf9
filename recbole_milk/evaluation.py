"""Ranking helpers for new-item evaluation: candidate masking, random tie-breaking, per-group metrics, exposure,
and RecBole's metrics of the top-K lists (ItemCoverage, AveragePopularity, GiniIndex, TailPercentage) over the
candidates of a scope."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from recbole_milk.options import LIST_METRICS

# Accuracy metrics with a group version: RecBole's formulas over the positives whose item is in the group.
GROUP_METRICS = ("recall", "ndcg", "hit", "precision", "mrr", "map")
# List metrics with a group version: over the group's candidates.
GROUP_LIST_METRICS = ("itemcoverage", "giniindex")


def restrict_to_candidates(scores: torch.Tensor, candidate_items: Optional[torch.Tensor]) -> torch.Tensor:
    """Set the score of every non-candidate item to -inf (in place) and return the scores."""
    if candidate_items is not None:
        scores[:, ~candidate_items.to(scores.device)] = float("-inf")
    return scores


def break_ties_at_random(scores: torch.Tensor, generator: torch.Generator, depth: Optional[int] = None) -> torch.Tensor:
    """Scores whose order is the float32 order, with equal scores ordered at random.

    Each finite score of a row that needs it gets a jitter below half the gap to the next float32 value (in
    float64), so distinct scores keep their order while equal ones are shuffled. Without it topk returns the
    lowest ids among ties, and RecBole numbers items by first appearance, which turns constant-score models into
    popularity oracles. With `depth` (the largest top-K read), a row whose best depth + 1 scores are finite and
    distinct already has one top-`depth` list, so only the other rows are jittered, and the float32 scores come back
    unchanged when no row needs it.
    """
    return rank_with_random_ties(scores, generator, depth)[0]


def rank_with_random_ties(scores: torch.Tensor, generator: torch.Generator,
                          depth: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(break_ties_at_random's scores, each row's top `depth` columns best first): the top-K that finds the ties
    serves the group metrics too. The columns are None without a depth below the row length."""
    scores32 = scores.float()
    if depth is None or depth >= scores32.shape[1]:
        return _jittered(scores32, generator), None
    best = torch.topk(scores32, depth + 1, dim=1)
    top = best.indices[:, :depth]
    tied = ((best.values[:, :-1] == best.values[:, 1:]).any(dim=1)
            | ~torch.isfinite(best.values).all(dim=1)).nonzero().squeeze(1)
    if tied.numel() == 0:
        return scores32, top
    out = scores32.double()
    out[tied] = _jittered(scores32[tied], generator)
    top[tied] = torch.topk(out[tied], depth, dim=1).indices
    return out, top


def _jittered(scores32: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    gap = torch.nextafter(scores32, torch.tensor(float("inf"), device=scores32.device)).sub_(scores32)
    # A generator on the scores' device (the trainer's choice on CUDA) draws there: no copy of the noise per batch.
    # In float64, so that the jitter of a score near 0 (gap about 1e-45) does not underflow to 0. In place: at a
    # million candidates every temporary of a batch is tens of megabytes.
    jitter = _tie_noise(scores32.shape, generator).to(scores32.device).mul_(0.5).mul_(gap.double())
    jitter.masked_fill_(~torch.isfinite(scores32), 0.0)
    return jitter.add_(scores32.double())


def _tie_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float64, device=generator.device)


def long_tail_items(item_counts: torch.Tensor, tail_ratio: Optional[float]) -> torch.Tensor:
    """Bool (item_num,) of RecBole's long tail (TailPercentage): among the items with training interactions, those
    with at most `tail_ratio` of them when it is above 1, else the `tail_ratio` share with the fewest (ties by id).
    New items have none, so they are never in it."""
    tail = 0.1 if tail_ratio is None or tail_ratio <= 0 else tail_ratio
    seen = item_counts > 0
    if tail > 1:
        return seen & (item_counts <= tail)
    ids = torch.nonzero(seen).squeeze(1)
    order = torch.sort(item_counts[ids], stable=True).indices
    in_tail = torch.zeros_like(seen)
    in_tail[ids[order[:max(int(len(ids) * tail), 1)]]] = True
    return in_tail


def gini_index(counts: torch.Tensor) -> float:
    """RecBole's GiniIndex of how often each item is shown: 0 when all are shown equally, near 1 when one is."""
    ordered = torch.sort(counts.double()).values
    n = ordered.numel()
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * rank - n - 1) * ordered).sum() / (n * ordered.sum()))


class GroupMetricAccumulator:
    """Top-K metrics and exposure per item group (complete, missing_1, ...), and the list metrics overall.

    A group's accuracy metrics (GROUP_METRICS) count only the positives whose item is in it; a user enters a group's
    average when it has at least one positive in that group. A group's ItemCoverage and GiniIndex are over its
    candidates. A group's exposure ratio at K is the share of all evaluated users' top-K slots its items take,
    divided by its share of the candidates: 1 means the group is shown as often as its size says. The ranking itself
    is the full ranking over all candidates.

    Overall list metrics (LIST_METRICS) follow RecBole's formulas with the scope's candidates as the item set:
    ItemCoverage@K is the share of candidates in some user's top K, GiniIndex@K the inequality of how often each
    candidate is shown, AveragePopularity@K the mean training interactions of the items in the top-K slots, and
    TailPercentage@K the share of slots holding long-tail items (long_tail_items). `new_items` adds the new items'
    share of the top-K slots.
    """

    def __init__(self, item_group: torch.Tensor, group_names: Sequence[str], topk: Sequence[int],
                 metrics: Sequence[str], candidate_items: Optional[torch.Tensor] = None,
                 item_counts: Optional[torch.Tensor] = None, new_items: Optional[torch.Tensor] = None,
                 tail_ratio: Optional[float] = None):
        self.item_group = item_group.long().cpu()
        self.group_names = list(group_names)
        self.topk = sorted(int(k) for k in topk)
        names = [m.lower() for m in metrics]
        self.metrics = [m for m in names if m in GROUP_METRICS]
        self.list_metrics = [m for m in names if m in LIST_METRICS]
        self.group_list_metrics = [m for m in self.list_metrics if m in GROUP_LIST_METRICS]
        if item_counts is None and {"averagepopularity", "tailpercentage"} & set(self.list_metrics):
            raise ValueError("AveragePopularity and TailPercentage need the training interactions per item: evaluate "
                             "a loader of scoped_data_preparation, or call fit first.")
        self.item_counts = None if item_counts is None else item_counts.double().cpu()
        self.tail = None if item_counts is None else long_tail_items(item_counts.cpu(), tail_ratio)
        self.new_items = None if new_items is None else new_items.cpu().bool()
        self.sums = torch.zeros(len(self.group_names), len(self.metrics), len(self.topk), dtype=torch.float64)
        self.users = torch.zeros(len(self.group_names), dtype=torch.float64)
        self.candidates = torch.ones(len(self.item_group), dtype=torch.bool) if candidate_items is None \
            else candidate_items.cpu().bool().clone()
        self.candidates[0] = False  # RecBole's padding item is never ranked
        self.candidate_counts = torch.bincount(self.item_group[self.candidates],
                                               minlength=len(self.group_names)).double()
        # How many evaluated users have each item in their top K, per K: every list metric and exposure reads it.
        self.shown = torch.zeros(len(self.topk), len(self.item_group), dtype=torch.float64)
        self.evaluated = 0
        # Batches kept by record() for a multi-process evaluation, to be added on every process in batch order.
        self.recorded: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []

    def top_items(self, scores: torch.Tensor) -> torch.Tensor:
        """The top max(topk) items of each row of `scores`, on the CPU. On a GPU only these indices leave it."""
        return torch.topk(scores, min(self.topk[-1], scores.shape[1]), dim=1).indices.cpu()

    def update(self, scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor,
               columns: Optional[torch.Tensor] = None, top: Optional[torch.Tensor] = None) -> None:
        """Add one batch: scores (users x items, or users x `columns` item ids), and the (row, item id) pairs of
        the batch's positives. `top`: the rows' top max(topk) columns when the caller has them already."""
        self.add(self._top_item_ids(scores, columns, top), positive_u, positive_i, len(self.item_group))

    def record(self, scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor,
               columns: Optional[torch.Tensor] = None, top: Optional[torch.Tensor] = None) -> None:
        """Keep one batch's top items and positives in `recorded` instead of adding them."""
        self.recorded.append((self._top_item_ids(scores, columns, top), positive_u.cpu(), positive_i.cpu(),
                              len(self.item_group)))

    def _top_item_ids(self, scores: torch.Tensor, columns: Optional[torch.Tensor],
                      top: Optional[torch.Tensor]) -> torch.Tensor:
        top = self.top_items(scores) if top is None else top.cpu()
        return top if columns is None else columns.cpu()[top]

    def add(self, top_items: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, n_items: int) -> None:
        """Add one batch from its top items (users x max K, best first) and its positives (row, item)."""
        n_users, max_k = top_items.shape
        # Positives as sorted keys row * n_items + item, not a (users x items) matrix: at a million items a batch's
        # matrix would cost more than its ranking.
        keys = torch.unique(positive_u.cpu().long() * n_items + positive_i.cpu().long())
        positive_rows, positive_items = keys // n_items, keys % n_items
        hits = torch.isin(torch.arange(n_users).unsqueeze(1) * n_items + top_items, keys)
        ranks = torch.arange(1, max_k + 1, dtype=torch.float64)
        discounts = 1.0 / torch.log2(ranks + 1.0)
        self.evaluated += n_users
        for k_index, k in enumerate(self.topk):
            self.shown[k_index] += torch.bincount(top_items[:, :k].reshape(-1), minlength=n_items).double()
        for group in range(len(self.group_names)):
            in_group = (self.item_group == group)
            n_pos = torch.bincount(positive_rows[in_group[positive_items]], minlength=n_users).double()
            group_hits = (hits & in_group[top_items]).double()
            counted = n_pos > 0
            self.users[group] += counted.sum()
            if not counted.any():
                continue
            for k_index, k in enumerate(self.topk):
                values = self._metric_values(group_hits[:, :k], n_pos, discounts[:k], k, ranks[:k])
                for m_index, name in enumerate(self.metrics):
                    self.sums[group, m_index, k_index] += values[name][counted].sum()

    @staticmethod
    def _metric_values(hits: torch.Tensor, n_pos: torch.Tensor, discounts: torch.Tensor, k: int,
                       ranks: torch.Tensor) -> Dict[str, torch.Tensor]:
        n_hits = hits.sum(1)
        safe_pos = n_pos.clamp(min=1)
        ideal = torch.cumsum(discounts, 0)
        ideal_len = n_pos.clamp(min=1, max=k).long() - 1
        first_hit = torch.where(hits.any(1), hits.argmax(1).double() + 1, torch.full_like(n_hits, float("inf")))
        precision_at = torch.cumsum(hits, 1) / ranks
        return {
            "recall": n_hits / safe_pos,
            "ndcg": (hits * discounts).sum(1) / ideal[ideal_len],
            "hit": (n_hits > 0).double(),
            "precision": n_hits / k,
            "mrr": 1.0 / first_hit,
            # RecBole's MAP@k: the precision at each hit, summed, over min(positives, k).
            "map": (precision_at * hits).sum(1) / n_pos.clamp(min=1, max=k),
        }

    def _list_value(self, name: str, k_index: int, items: torch.Tensor) -> float:
        """One list metric at the k_index-th cut-off: coverage and Gini over the candidates `items` (bool),
        popularity and long-tail share over every top-K slot."""
        shown = self.shown[k_index]
        slots = max(self.evaluated * self.topk[k_index], 1)
        if name == "itemcoverage":
            return float((shown[items] > 0).sum() / items.sum().clamp(min=1))
        if name == "giniindex":
            return gini_index(shown[items])
        if name == "averagepopularity":
            return float((shown * self.item_counts).sum() / slots)
        return float(shown[self.tail].sum() / slots)

    def list_result(self, decimals: int = 4) -> Dict[str, float]:
        """{'itemcoverage@10': value, ...}: the requested list metrics over all candidates, in config order."""
        return {f"{name}@{k}": round(self._list_value(name, j, self.candidates), decimals)
                for name in self.list_metrics for j, k in enumerate(self.topk)}

    def new_item_share(self, decimals: int = 4) -> Dict[str, float]:
        """{'new_item_share@10': share of all top-10 slots holding new items, ..., 'candidate_share': their share of
        the candidates, the slot share a ranking blind to newness would give}; {} without new items."""
        if self.new_items is None or not bool((self.new_items & self.candidates).any()):
            return {}
        slots = [max(self.evaluated * k, 1) for k in self.topk]
        out = {f"new_item_share@{k}": round(float(self.shown[j, self.new_items].sum() / slots[j]), decimals)
               for j, k in enumerate(self.topk)}
        out["candidate_share"] = round(float((self.new_items & self.candidates).sum() / self.candidates.sum()),
                                       decimals)
        return out

    def result(self, decimals: int = 4) -> Dict[str, Dict[str, float]]:
        """{group name: {'recall@10': value, ...}} for every group with at least one evaluated user."""
        out: Dict[str, Dict[str, float]] = {}
        for group, name in enumerate(self.group_names):
            if self.users[group] == 0:
                continue
            out[name] = {f"{metric}@{k}": round(float(self.sums[group, m, j] / self.users[group]), decimals)
                         for m, metric in enumerate(self.metrics) for j, k in enumerate(self.topk)}
            members = self.candidates & (self.item_group == group)
            for metric in self.group_list_metrics:
                for j, k in enumerate(self.topk):
                    # The Gini index of a group none of whose items is ever shown is undefined: left out.
                    if metric == "itemcoverage" or bool(self.shown[j, members].sum() > 0):
                        out[name][f"{metric}@{k}"] = round(self._list_value(metric, j, members), decimals)
            out[name]["users"] = int(self.users[group])
        return out

    def exposure(self, decimals: int = 4) -> Dict[str, Dict[str, float]]:
        """{group name: {'exposure@10': ratio, ...}} for every group that has candidates."""
        out: Dict[str, Dict[str, float]] = {}
        candidate_share = self.candidate_counts / self.candidate_counts.sum().clamp(min=1.0)
        slots = torch.zeros(len(self.group_names), len(self.topk), dtype=torch.float64).index_add_(
            0, self.item_group, self.shown.t())
        for group, name in enumerate(self.group_names):
            if self.candidate_counts[group] == 0:
                continue
            out[name] = {}
            for j, k in enumerate(self.topk):
                slot_share = slots[group, j] / slots[:, j].sum().clamp(min=1.0)
                out[name][f"exposure@{k}"] = round(float(slot_share / candidate_share[group]), decimals)
        return out
