"""Evaluation scopes and the warm holdout they need.

- new: a user's interactions with new items, ranked among the candidate new items (the paper's protocol).
- warm: a user's held-out interactions with warm items, ranked among the warm items.
- all: both, in one ranking over the warm items and the candidate new items (production, where a new item
  competes with proven ones).

warm and all need interactions of warm items that training never sees: the warm holdout takes a share of each
user's warm (user, item) pairs out of training, cut per user as RecBole's RS split cuts. The new-item split does not
move and new items never enter training either way.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_milk.data.roles import ROLE_TEST, ROLE_VALID, ROLE_WARM
from recbole_milk.data.sampler import phase_item_pool
from recbole_milk.errors import DataError

HOLDOUT_PHASES = ("valid", "test")


def scope_item_pool(item_role: torch.Tensor, phase: str, candidate_pool: str = "all_new",
                    scope: str = "new") -> Optional[torch.Tensor]:
    """Bool (item_num,) of the items an evaluation phase of `scope` ranks; None when every real item qualifies.

    new: the phase's candidate new items (phase_item_pool); warm: the warm items; all: both.
    """
    new_pool = phase_item_pool(item_role, phase, candidate_pool)
    if scope == "new" or new_pool is None:
        return new_pool
    warm = item_role == ROLE_WARM
    return warm if scope == "warm" else warm | new_pool


def _holdout_counts(n_pairs: np.ndarray, ratios: Sequence[float]) -> Dict[str, np.ndarray]:
    """Per user, how many pairs go to valid and to test: RecBole's _calcu_split_ids for [train, valid, test], in
    arrays. Each share is rounded down; a share below one pair becomes one (test first) while two stay in training."""
    counts = {phase: np.floor(ratio * n_pairs).astype(np.int64) for phase, ratio in zip(HOLDOUT_PHASES, ratios)}
    train = n_pairs - counts["valid"] - counts["test"]
    for phase, ratio in zip(HOLDOUT_PHASES[::-1], ratios[::-1]):
        share = ratio * n_pairs
        bump = (train > 1) & (share > 0) & (share < 1)
        counts[phase] += bump
        train -= bump
    return counts


def warm_holdout_pairs(users: np.ndarray, items: np.ndarray, item_role: torch.Tensor, item_num: int,
                       ratios: Sequence[float], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """{"valid": keys, "test": keys}: sorted keys user * item_num + item of the warm pairs held out of training.

    A share `ratios` = [valid, test] of each user's distinct warm pairs, drawn uniformly by `rng`. Pairs, not
    interactions, are drawn, so a repeated interaction never sits on both sides of the cut.
    """
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    warm = item_role.numpy()[items] == ROLE_WARM
    keys = np.unique(users[warm] * item_num + items[warm])
    pair_users = keys // item_num
    n_pairs = np.bincount(pair_users)
    # Within each user, pairs in a random order; the first ones go to valid, the next ones to test.
    order = np.lexsort((rng.random(len(keys)), pair_users))
    starts = np.concatenate([[0], np.cumsum(n_pairs)[:-1]])
    position = np.empty(len(keys), dtype=np.int64)
    position[order] = np.arange(len(keys)) - starts[pair_users[order]]
    counts = _holdout_counts(n_pairs, ratios)
    n_valid = counts["valid"][pair_users]
    in_valid = position < n_valid
    in_test = (position >= n_valid) & (position < n_valid + counts["test"][pair_users])
    holdout = {"valid": keys[in_valid], "test": keys[in_test]}
    for (phase, held), share in zip(holdout.items(), ratios):
        if held.size == 0:
            raise DataError(f"warm_holdout_ratio = {list(ratios)} holds no warm interaction out for {phase}: no user "
                            f"has enough warm interactions for a {phase} share of {share} with two left for training. "
                            "Raise the share, or evaluate new items only (eval_scopes: [new]).")
    return holdout


def scope_masks(users: torch.Tensor, items: torch.Tensor, item_role: torch.Tensor, item_num: int,
                holdout: Optional[Dict[str, np.ndarray]]) -> Tuple[torch.Tensor, Dict[Tuple[str, str], torch.Tensor]]:
    """Bool masks over the interactions: training, and per (scope, phase) the positives that scope ranks.

    Training holds the warm items' interactions less the held-out pairs. (new, phase): the interactions of the
    phase's new items. With a holdout, (warm, phase): the phase's held-out warm pairs; (all, phase): both.
    """
    role = item_role[items]
    parts = {("new", "valid"): role == ROLE_VALID, ("new", "test"): role == ROLE_TEST}
    held = torch.zeros_like(role, dtype=torch.bool)
    if holdout is not None:
        keys = (users.long() * item_num + items.long()).numpy()
        for phase in HOLDOUT_PHASES:
            parts["warm", phase] = torch.from_numpy(np.isin(keys, holdout[phase]))
            parts["all", phase] = parts["new", phase] | parts["warm", phase]
            held |= parts["warm", phase]
    return (role == ROLE_WARM) & ~held, parts
