"""Full-sort evaluation over candidate new items only.

A subclass of RecBole's FullSortEvalDataLoader, so RecBole's trainer keeps its full-sort path. It adds
`candidate_items`; the trainer scores non-candidates -inf and breaks ties at random.
"""
from typing import Any, Optional

import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_milk.data.sampler import phase_item_pool


class NewItemFullSortEvalDataLoader(FullSortEvalDataLoader):
    """Evaluates the users with at least one interaction in the phase, ranking only `candidate_items`.

    Attributes:
        phase: 'valid' or 'test' (from the sampler).
        candidate_items: bool (item_num,) of the items that may be ranked, or None when every item is a
            candidate (RS/LS/TS splits). config['candidate_pool'] all_new: valid and test new items for both
            phases; split_new: the phase's own new items.
    """

    def __init__(self, config: Any, dataset: Any, sampler: Any, shuffle: bool = False):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.phase: str = sampler.phase
        self.candidate_items: Optional[torch.Tensor] = phase_item_pool(
            dataset.item_role, self.phase, config["candidate_pool"])
