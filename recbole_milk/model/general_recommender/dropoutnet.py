"""DropoutNet (Volkovs et al., NeurIPS 2017, "DropoutNet: Addressing Cold Start in Recommender Systems").

Two towers map preference inputs (pre-trained CF embeddings) and content to a shared space, and are trained to
reproduce the pre-trained CF scores. Dropping an item's preference input during training teaches the item tower
to score from content alone, which is what a new item has: its preference input is zero at inference.
"""
from typing import Any, Optional

import torch
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import TwoStageRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, mlp
from recbole_milk.model.loss import squared_norm
from recbole_milk.options import HIDDEN_SIZES, NON_NEGATIVE, RATIO, positive_int


class DropoutNet(TwoStageRecommender):
    r"""DropoutNet: f_U(U_u)^T f_V([V_v; x_v]) regressed onto the pre-trained score U_u^T V_v.

    U, V: frozen pre-trained warm CF embeddings (TwoStageRecommender: buffers, never trained). x_v: the M modalities
    concatenated (each imputed, L2-normalised if normalize_features). f_U and f_V: MLPs with hidden layers
    `hidden_sizes` and output `embedding_size`.

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
        **TwoStageRecommender.option_rules,
        "embedding_size": positive_int(),
        "hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "dropout_rate": RATIO,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.dropout_rate = float(self.options["dropout_rate"])
        self.reg_weight = float(self.options["reg_weight"])
        hidden, activation = self.options["hidden_sizes"], self.options["activation"]
        self.user_tower = mlp(self.cf_size, hidden, self.embedding_size, activation)
        self.item_tower = mlp(self.cf_size + self.content_size, hidden, self.embedding_size, activation)
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_tower(self.user_cf if users is None else self.user_cf[users])

    def _item_tower(self, preference: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return self.item_tower(torch.cat([preference, content], dim=1))

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        rows = content.concatenated()
        if items is None:
            preference = rows.new_zeros((rows.shape[0], self.cf_size))
        else:
            preference = self.item_cf[items] * self._warm_mask(items, rows)
        return self._item_tower(preference, rows)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        preference = self.item_cf[items] * self._warm_mask(items, self.item_cf)
        kept = torch.rand(items.shape[0], 1, device=preference.device) >= self.dropout_rate
        represented = self._item_tower(preference * kept.to(preference.dtype),
                                       self.training_content(items).concatenated())
        user_r = self.user_representations(users)
        item_cf = self.item_cf[items]
        loss = self.cf_regression_loss(user_r, represented[pos], represented[neg], users, item_cf[pos], item_cf[neg])
        return loss + self.reg_weight * squared_norm(user_r, represented[pos], represented[neg])
