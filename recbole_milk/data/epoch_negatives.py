"""Training loaders that draw an epoch's negatives in one sampler call.

RecBole's training loader asks the sampler for negatives once per batch. Here the loader draws the negatives of
every training interaction when the epoch starts (one vectorised call, so the Python work per epoch does not grow
with the number of batches) and each batch takes its interactions' share. The draws come from the same sampler
with the same distribution and exclusions; only the order in which the random stream is consumed changes.
Dynamic (model-scored) negatives need the model of the moment, so such loaders keep RecBole's per-batch path.
"""
from functools import lru_cache
from typing import Any, Optional, Sequence, Type

import numpy as np
import torch


class EpochNegativesMixin:
    """A RecBole TrainDataLoader whose negatives are drawn per epoch (see the module docstring)."""

    _epoch_negatives: Optional[torch.Tensor] = None

    def draws_epoch_negatives(self) -> bool:
        """Whether this loader's negatives are static draws from the sampler (not dynamic, not none)."""
        args = self.neg_sample_args
        return (not args.get("dynamic", False) and args["distribution"] != "none"
                and args["sample_num"] != "none")

    def __iter__(self):
        self._epoch_negatives = self._draw_epoch_negatives() if self.draws_epoch_negatives() else None
        return super().__iter__()

    def _draw_epoch_negatives(self) -> torch.Tensor:
        """(neg_sample_num, interactions): negative j of training interaction i at [j, i]."""
        inter = self._dataset.inter_feat
        users, items = inter[self.uid_field].numpy(), inter[self.iid_field].numpy()
        # RecBole's layout: value[j * len(users) + i] is negative j of interaction i.
        values = self._sampler.sample_by_user_ids(users, items, self.neg_sample_num)
        return values.view(self.neg_sample_num, len(users))

    def collate_fn(self, index: Sequence[int]) -> Any:
        if self._epoch_negatives is None:
            return super().collate_fn(index)
        index = np.asarray(index, dtype=np.int64)
        data = self.transform(self._dataset, self._dataset[index])
        return self.sampling_func(data, self._epoch_negatives[:, torch.from_numpy(index)].reshape(-1))


@lru_cache(maxsize=None)
def with_epoch_negatives(loader_class: Type) -> Type:
    """`loader_class` (a RecBole TrainDataLoader) with EpochNegativesMixin mixed in."""
    return type(f"EpochNegatives{loader_class.__name__}", (EpochNegativesMixin, loader_class), {})
