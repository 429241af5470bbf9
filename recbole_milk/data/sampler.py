"""Negative sampling restricted to each phase's item pool: warm items for training, candidate new items for
sampled evaluation. Vectorised, and it never loops forever on a user who has interacted with the whole pool."""
import copy
from logging import getLogger
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from recbole.sampler import Sampler

from recbole_milk.data.roles import ROLE_TEST, ROLE_VALID, ROLE_WARM


def phase_item_pool(item_role: torch.Tensor, phase: str, candidate_pool: str = "all_new") -> Optional[torch.Tensor]:
    """Bool (item_num,) of the items a phase may rank or sample; None when every real item qualifies.

    train: warm items. valid/test: the new items of the candidate pool (all_new: valid and test new items,
    split_new: only the phase's own). Without new items (RS/LS/TS splits) every item qualifies: None.
    """
    is_new = (item_role == ROLE_VALID) | (item_role == ROLE_TEST)
    if phase == "train":
        return item_role == ROLE_WARM if bool(is_new.any()) else None
    if not bool(is_new.any()):
        return None
    if candidate_pool == "all_new":
        return is_new
    return item_role == (ROLE_VALID if phase == "valid" else ROLE_TEST)


class WarmItemSampler(Sampler):
    """RecBole Sampler whose negatives come from the phase's item pool (train: warm items only).

    A negative must not be a positive of the user in this or an earlier phase. Draws that hit one are redrawn
    `max_redraws` times in bulk; the few left are drawn exactly from the user's unused pool items, and only if
    that set is empty is a used item accepted (warned once).
    """

    max_redraws = 10

    def __init__(self, phases: Sequence[str], datasets: Sequence, distribution: str = "uniform", alpha: float = 1.0,
                 candidate_pool: str = "all_new"):
        phases, datasets = list(phases), list(datasets)
        item_role = datasets[0].item_role
        self._pools: Dict[str, np.ndarray] = {}
        for phase in phases:
            pool = phase_item_pool(item_role, phase, candidate_pool)
            ids = torch.nonzero(pool).squeeze(1) if pool is not None else torch.arange(1, len(item_role))
            self._pools[phase] = ids.numpy().astype(np.int64)
        self.phase: Optional[str] = None
        self._pool = self._pools[phases[0]]
        self._warned = False
        super().__init__(phases, datasets, distribution, alpha)

    # ----- distributions -----

    def set_distribution(self, distribution: str) -> None:
        self.distribution = distribution
        if distribution == "popularity":
            self._build_alias_table()

    def _build_alias_table(self) -> None:
        """Cumulative popularity**alpha over the pool. Training counts its own interactions only, so held-out warm
        interactions never shape its negatives; evaluation counts all phases, as in RecBole."""
        counts = np.zeros(self.item_num, dtype=np.float64)
        for dataset in (self.datasets if self.phase in ("valid", "test") else self.datasets[:1]):
            counts += np.bincount(dataset.inter_feat[self.iid_field].numpy(), minlength=self.item_num)
        weights = counts[self._pool] ** self.alpha
        if weights.sum() <= 0:
            weights = np.ones(len(self._pool))
        self._cdf = np.cumsum(weights / weights.sum())

    def _uni_sampling(self, sample_num: int) -> np.ndarray:
        return self._pool[np.random.randint(0, len(self._pool), sample_num)]

    def _pop_sampling(self, sample_num: int) -> np.ndarray:
        index = np.searchsorted(self._cdf, np.random.random(sample_num), side="right")
        return self._pool[np.minimum(index, len(self._pool) - 1)]

    # ----- used items -----

    def get_used_ids(self) -> Dict[str, np.ndarray]:
        """Per phase: object array user -> set of item ids seen up to that phase (what RecBole's loaders read).

        Also keeps, per phase, the sorted keys user * item_num + item for vectorised membership tests.
        """
        self._used_keys: Dict[str, np.ndarray] = {}
        used_ids = {}
        keys = np.zeros(0, dtype=np.int64)
        for phase, dataset in zip(self.phases, self.datasets):
            users = dataset.inter_feat[self.uid_field].numpy().astype(np.int64)
            items = dataset.inter_feat[self.iid_field].numpy().astype(np.int64)
            keys = np.union1d(keys, users * self.item_num + items)
            self._used_keys[phase] = keys
            used_ids[phase] = self._sets_by_user(keys)
        return used_ids

    def _sets_by_user(self, keys: np.ndarray) -> np.ndarray:
        users, items = np.divmod(keys, self.item_num)
        bounds = np.searchsorted(users, np.arange(self.user_num + 1))
        sets = np.empty(self.user_num, dtype=object)
        sets[:] = [set(items[bounds[u]:bounds[u + 1]].tolist()) for u in range(self.user_num)]
        return sets

    def set_phase(self, phase: str) -> "WarmItemSampler":
        if phase not in self.phases:
            raise ValueError(f"Phase [{phase}] not exist.")
        sampler = copy.copy(self)
        sampler.phase = phase
        sampler.used_ids = self.used_ids[phase]
        sampler._used = self._used_keys[phase]
        sampler._pool = self._pools[phase]
        sampler.set_distribution(self.distribution)
        return sampler

    def _is_used(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.item_num + items
        position = np.minimum(np.searchsorted(self._used, keys), max(len(self._used) - 1, 0))
        return self._used[position] == keys if len(self._used) else np.zeros(len(keys), dtype=bool)

    # ----- sampling -----

    def sample_by_key_ids(self, key_ids, num: int) -> torch.Tensor:
        """`num` negatives per user, laid out as RecBole expects: value[j * len(key_ids) + i] is for key_ids[i]."""
        if self.phase is None:
            raise RuntimeError("Call set_phase('train'|'valid'|'test') before sampling.")
        users = np.tile(np.asarray(key_ids, dtype=np.int64), num)
        values = self.sampling(len(users)).astype(np.int64)
        redo = np.flatnonzero(self._is_used(users, values))
        for _ in range(self.max_redraws):
            if redo.size == 0:
                break
            values[redo] = self.sampling(redo.size)
            redo = redo[self._is_used(users[redo], values[redo])]
        if redo.size:
            self._draw_exactly(users, values, redo)
        return torch.from_numpy(values)

    def _draw_exactly(self, users: np.ndarray, values: np.ndarray, redo: np.ndarray) -> None:
        """Uniform draws from each user's unused pool items; only reached by users who used most of the pool."""
        exhausted: List[int] = []
        for user in np.unique(users[redo]):
            slots = redo[users[redo] == user]
            free = np.setdiff1d(self._pool, self._used_items(user), assume_unique=True)
            if free.size:
                values[slots] = free[np.random.randint(0, free.size, slots.size)]
            else:
                exhausted.append(int(user))
        if exhausted and not self._warned:
            self._warned = True
            getLogger().warning(f"{len(exhausted)} user(s) (e.g. internal id {exhausted[0]}) have interacted with every "
                                f"item of the {self.phase} pool; their negatives are items they have used.")

    def _used_items(self, user: int) -> np.ndarray:
        start, end = np.searchsorted(self._used, [user * self.item_num, (user + 1) * self.item_num])
        return self._used[start:end] - user * self.item_num
