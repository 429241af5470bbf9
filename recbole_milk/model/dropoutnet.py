"""DropoutNet (Volkovs et al., NeurIPS 2017, "DropoutNet: Addressing Cold Start in Recommender Systems").

Two towers map preference inputs (pre-trained CF embeddings) and content to a shared space, and are trained to
reproduce the pre-trained CF scores. Dropping an item's preference input during training teaches the item tower
to score from content alone, which is what a new item has: its preference input is zero at inference.
"""
from typing import Any, Optional

import torch
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.content import (
    ACTIVATION_RULE,
    HIDDEN_SIZES_RULE,
    ContentRecommender,
    batch_items,
    mlp,
    squared_norm,
)
from recbole_milk.options import NON_NEGATIVE, RATIO, positive_int
from recbole_milk.pretrained import CONFIG_KEY, folder_rule


class DropoutNet(ContentRecommender):
    r"""DropoutNet: f_U(U_u)^T f_V([V_v; x_v]) regressed onto the pre-trained score U_u^T V_v.

    U, V: frozen pre-trained warm CF embeddings (buffers, never trained; see recbole_milk/pretrained.py for the
    two-stage path and `pretrained_cf_dir`). x_v: the M modalities concatenated (each imputed, L2-normalised if
    normalize_features). f_U and f_V: MLPs with hidden layers `hidden_sizes` and output `embedding_size`.

    Training: for every (user, positive, warm negative) triple both pairs (u, pos) and (u, neg) are regression
    targets, loss = mean squared error to U_u^T V_v. Each distinct item of a batch has its preference input V_v set
    to zero with probability `dropout_rate` (the paper's input dropout). Inference: warm items use V_v; every other
    item uses a ZERO preference input, never its CF row (which is zero anyway: new items are never trained).

    Deviations from the paper:
      - Users have no content here, so f_U sees the preference input only, and user dropout is not used: every
        user has a pre-trained row (the new-item protocol has no new users).
      - The paper's batch normalisation between layers is left out, and so is its alternative "transform" of the
        preference input (mean of the item's users' vectors), which needs interactions new items lack.
      - Regression pairs are the pipeline's positives and uniformly drawn warm negatives.
      - `reg_weight` times the batch mean of the squared norms of the tower outputs is added (0 turns it off).
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "hidden_sizes": HIDDEN_SIZES_RULE,
        "activation": ACTIVATION_RULE,
        "dropout_rate": RATIO,
        "reg_weight": NON_NEGATIVE,
        CONFIG_KEY: folder_rule(),
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.dropout_rate = float(self.options["dropout_rate"])
        self.reg_weight = float(self.options["reg_weight"])
        cf_size = self.register_frozen_cf(dataset)
        hidden, activation = self.options["hidden_sizes"], self.options["activation"]
        self.user_tower = mlp(cf_size, hidden, self.embedding_size, activation)
        self.item_tower = mlp(cf_size + self.content_size, hidden, self.embedding_size, activation)
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_tower(self.user_cf if users is None else self.user_cf[users])

    def _item_tower(self, preference: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return self.item_tower(torch.cat([preference, content], dim=1))

    def represent_items(self, content: torch.Tensor, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        if items is None:
            preference = content.new_zeros((content.shape[0], self.item_cf.shape[1]))
        else:
            preference = self.item_cf[items] * self._warm_mask(items, content)
        return self._item_tower(preference, content)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        preference = self.item_cf[items] * self._warm_mask(items, self.item_cf)
        kept = torch.rand(items.shape[0], 1, device=preference.device) >= self.dropout_rate
        represented = self._item_tower(preference * kept.to(preference.dtype), self.item_content[items])
        user_r = self.user_representations(users)
        user_cf = self.user_cf[users]
        item_cf = self.item_cf[items]
        predicted = torch.cat([(user_r * represented[pos]).sum(dim=1), (user_r * represented[neg]).sum(dim=1)])
        target = torch.cat([(user_cf * item_cf[pos]).sum(dim=1), (user_cf * item_cf[neg]).sum(dim=1)])
        loss = (predicted - target).pow(2).mean()
        return loss + self.reg_weight * squared_norm(user_r, represented[pos], represented[neg])
