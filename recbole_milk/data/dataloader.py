"""Full-sort evaluation over the candidate items of a scope (by default: new items only).

A subclass of RecBole's FullSortEvalDataLoader, so RecBole's trainer keeps its full-sort path. It adds
`candidate_items`; the trainer scores non-candidates -inf and breaks ties at random.
"""
from typing import Any, Optional

import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_milk.data.scopes import scope_item_pool


class NewItemFullSortEvalDataLoader(FullSortEvalDataLoader):
    """Evaluates the users with at least one interaction in the phase, ranking only `candidate_items`.

    Attributes:
        phase: 'valid' or 'test' (from the sampler).
        scope: 'new', 'warm' or 'all' (recbole_milk/data/scopes.py).
        candidate_items: bool (item_num,) of the items that may be ranked, or None when every item is a
            candidate (RS/LS/TS splits). Scope new, config['candidate_pool'] all_new: valid and test new items for
            both phases; split_new: the phase's own new items. warm: the warm items; all: both.
    """

    def __init__(self, config: Any, dataset: Any, sampler: Any, shuffle: bool = False, scope: str = "new"):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.phase: str = sampler.phase
        self.scope = scope
        self.candidate_items: Optional[torch.Tensor] = scope_item_pool(
            dataset.item_role, self.phase, config["candidate_pool"], scope)
