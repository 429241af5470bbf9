"""Ranking helpers for new-item evaluation: candidate masking, random tie-breaking, per-group metrics, exposure."""
from typing import Dict, Optional, Sequence

import torch

GROUP_METRICS = ("recall", "ndcg", "hit", "precision", "mrr")


def restrict_to_candidates(scores: torch.Tensor, candidate_items: Optional[torch.Tensor]) -> torch.Tensor:
    """Set the score of every non-candidate item to -inf (in place) and return the scores."""
    if candidate_items is not None:
        scores[:, ~candidate_items.to(scores.device)] = float("-inf")
    return scores


def break_ties_at_random(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return float64 scores whose order is the float32 order, with equal scores ordered at random.

    Each finite score gets a jitter below half the gap to the next float32 value, so distinct scores keep their
    order while equal ones are shuffled. Without it topk returns the lowest ids among ties, and RecBole numbers
    items by first appearance, which turns constant-score models into popularity oracles.
    """
    scores32 = scores.float()
    gap = torch.nextafter(scores32, torch.tensor(float("inf"), device=scores32.device)) - scores32
    noise = torch.rand(scores32.shape, generator=generator, dtype=torch.float64).to(scores32.device)
    # In float64, so that the jitter of a score near 0 (gap about 1e-45) does not underflow to 0.
    jitter = torch.where(torch.isfinite(scores32), 0.5 * noise * gap.double(), torch.zeros_like(noise))
    return scores32.double() + jitter


class GroupMetricAccumulator:
    """Top-K metrics and exposure per item group (complete, missing_1, ...).

    A group's metrics count only the positives whose item is in it; a user enters a group's average when it has at
    least one positive in that group. A group's exposure ratio at K is the share of all evaluated users' top-K slots
    its items take, divided by its share of the candidates: 1 means the group is shown as often as its size says.
    The ranking itself is the full ranking over all candidates.
    """

    def __init__(self, item_group: torch.Tensor, group_names: Sequence[str], topk: Sequence[int],
                 metrics: Sequence[str], candidate_items: Optional[torch.Tensor] = None):
        self.item_group = item_group.long().cpu()
        self.group_names = list(group_names)
        self.topk = sorted(int(k) for k in topk)
        self.metrics = [m.lower() for m in metrics if m.lower() in GROUP_METRICS]
        self.sums = torch.zeros(len(self.group_names), len(self.metrics), len(self.topk), dtype=torch.float64)
        self.users = torch.zeros(len(self.group_names), dtype=torch.float64)
        candidates = torch.ones(len(self.item_group), dtype=torch.bool) if candidate_items is None \
            else candidate_items.cpu().bool().clone()
        candidates[0] = False  # RecBole's padding item is never ranked
        self.candidate_counts = torch.bincount(self.item_group[candidates], minlength=len(self.group_names)).double()
        self.slots = torch.zeros(len(self.group_names), len(self.topk), dtype=torch.float64)

    def update(self, scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor) -> None:
        """Add one batch: scores (users x items), and the (row, item) pairs of the batch's positives."""
        scores = scores.cpu()
        n_users, _ = scores.shape
        max_k = min(self.topk[-1], scores.shape[1])
        top_items = torch.topk(scores, max_k, dim=1).indices
        positive = torch.zeros(scores.shape, dtype=torch.bool)
        positive[positive_u.cpu(), positive_i.cpu()] = True
        hits = positive.gather(1, top_items)
        ranks = torch.arange(1, max_k + 1, dtype=torch.float64)
        discounts = 1.0 / torch.log2(ranks + 1.0)
        for k_index, k in enumerate(self.topk):
            shown = self.item_group[top_items[:, :k]].reshape(-1)
            self.slots[:, k_index] += torch.bincount(shown, minlength=len(self.group_names)).double()
        for group in range(len(self.group_names)):
            in_group = (self.item_group == group)
            n_pos = (positive & in_group.unsqueeze(0)).sum(1).double()
            group_hits = (hits & in_group[top_items]).double()
            counted = n_pos > 0
            self.users[group] += counted.sum()
            if not counted.any():
                continue
            for k_index, k in enumerate(self.topk):
                values = self._metric_values(group_hits[:, :k], n_pos, discounts[:k], k)
                for m_index, name in enumerate(self.metrics):
                    self.sums[group, m_index, k_index] += values[name][counted].sum()

    @staticmethod
    def _metric_values(hits: torch.Tensor, n_pos: torch.Tensor, discounts: torch.Tensor,
                       k: int) -> Dict[str, torch.Tensor]:
        n_hits = hits.sum(1)
        safe_pos = n_pos.clamp(min=1)
        ideal = torch.cumsum(discounts, 0)
        ideal_len = n_pos.clamp(min=1, max=k).long() - 1
        first_hit = torch.where(hits.any(1), hits.argmax(1).double() + 1, torch.full_like(n_hits, float("inf")))
        return {
            "recall": n_hits / safe_pos,
            "ndcg": (hits * discounts).sum(1) / ideal[ideal_len],
            "hit": (n_hits > 0).double(),
            "precision": n_hits / k,
            "mrr": 1.0 / first_hit,
        }

    def result(self, decimals: int = 4) -> Dict[str, Dict[str, float]]:
        """{group name: {'recall@10': value, ...}} for every group with at least one evaluated user."""
        out: Dict[str, Dict[str, float]] = {}
        for group, name in enumerate(self.group_names):
            if self.users[group] == 0:
                continue
            out[name] = {f"{metric}@{k}": round(float(self.sums[group, m, j] / self.users[group]), decimals)
                         for m, metric in enumerate(self.metrics) for j, k in enumerate(self.topk)}
            out[name]["users"] = int(self.users[group])
        return out

    def exposure(self, decimals: int = 4) -> Dict[str, Dict[str, float]]:
        """{group name: {'exposure@10': ratio, ...}} for every group that has candidates."""
        out: Dict[str, Dict[str, float]] = {}
        candidate_share = self.candidate_counts / self.candidate_counts.sum().clamp(min=1.0)
        for group, name in enumerate(self.group_names):
            if self.candidate_counts[group] == 0:
                continue
            out[name] = {}
            for j, k in enumerate(self.topk):
                slot_share = self.slots[group, j] / self.slots[:, j].sum().clamp(min=1.0)
                out[name][f"exposure@{k}"] = round(float(slot_share / candidate_share[group]), decimals)
        return out

