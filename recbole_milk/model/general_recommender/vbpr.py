"""VBPR (He and McAuley, AAAI 2016, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback").

Matrix factorisation whose item factors are extended by a linear projection of the item's content. A new item has
no trained ID factor or ID bias, so it is scored through the content terms alone.
"""
from typing import Any, Optional

import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import ContentRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.loss import bpr_loss, squared_norm
from recbole_milk.options import NON_NEGATIVE, positive_int


class VBPR(ContentRecommender):
    r"""VBPR: score(u, i) = beta_i + <gamma_u, gamma_i> + <theta_u, E x_i> + <beta', x_i>.

    gamma (embedding_size) are ID factors, theta_u (content_embedding_size) the user's content factors, E a linear
    projection without bias and beta' the content bias; x_i is the M modalities concatenated (each imputed,
    L2-normalised if normalize_features). Only warm items use gamma_i and beta_i: for every other item both are
    zero, whatever their (never trained) parameters hold. As an inner product the score is
    <[gamma_u; theta_u; 1], [w_i gamma_i; E x_i; w_i beta_i + <beta', x_i>]>, w_i = 1 for warm items, else 0.

    Deviations from the paper:
      - The global offset alpha and the user bias beta_u are left out: they add the same amount to every item of a
        user, so neither the BPR loss nor any ranking depends on them.
      - x_i concatenates all M modalities instead of one visual CNN feature.
      - Regularisation: `reg_weight` times the batch mean of ||gamma_u||^2 + ||theta_u||^2 + ||gamma_i||^2 +
        beta_i^2 over the batch's positive and negative items (the paper's L2 on the same factors); E and beta'
        are not regularised (the paper gives them their own weight).
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "content_embedding_size": positive_int(),
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.content_embedding_size = self.options["content_embedding_size"]
        self.reg_weight = float(self.options["reg_weight"])
        self.user_id_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.user_content_embedding = nn.Embedding(self.n_users, self.content_embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.content_projection = nn.Linear(self.content_size, self.content_embedding_size, bias=False)
        self.content_bias = nn.Linear(self.content_size, 1, bias=False)
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        gamma = self.user_id_embedding.weight if users is None else self.user_id_embedding(users)
        theta = self.user_content_embedding.weight if users is None else self.user_content_embedding(users)
        return torch.cat([gamma, theta, torch.ones_like(gamma[:, :1])], dim=1)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        rows = content.concatenated()
        projected = self.content_projection(rows)
        bias = self.content_bias(rows)
        if items is None:
            gamma = projected.new_zeros((rows.shape[0], self.embedding_size))
        else:
            warm = self._warm_mask(items, projected)
            gamma = self.item_id_embedding(items) * warm
            bias = bias + self.item_bias(items) * warm
        return torch.cat([gamma, projected, bias], dim=1)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        represented = self.represent_items(self.training_content(items), items)
        user_r = self.user_representations(users)
        pos_r, neg_r = represented[pos], represented[neg]
        loss = bpr_loss((user_r * pos_r).sum(dim=1), (user_r * neg_r).sum(dim=1))
        pos_ids, neg_ids = items[pos], items[neg]
        reg = squared_norm(
            self.user_id_embedding(users), self.user_content_embedding(users),
            self.item_id_embedding(pos_ids), self.item_id_embedding(neg_ids),
            self.item_bias(pos_ids), self.item_bias(neg_ids),
        )
        return loss + self.reg_weight * reg
