"""MTPR (Du et al., ACM MM 2020, "How to Learn Item Representation for Cold-Start Multimedia Recommendation?").

An item has a normal representation [e_i; c_i] (ID embedding and content embedding) and a counterfactual one
[0; c_i] that pretends the item is new. Multi-task pairwise ranking trains both, so that the representation new
items get at inference (the counterfactual one) is the one training also optimised.
"""
from typing import Any, Optional

import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import ContentRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, mlp
from recbole_milk.model.loss import bpr_loss, squared_norm
from recbole_milk.options import HIDDEN_SIZES, NON_NEGATIVE, positive_int


class MTPR(ContentRecommender):
    r"""MTPR: q_i^N = [e_i; c_i], q_i^C = [0; c_i], c_i = g(x_i), score = <p_u, q_i>.

    x_i is the M modalities concatenated (each imputed, L2-normalised if normalize_features); g is an MLP with
    hidden layers `content_hidden_sizes` ([] = affine) to `content_embedding_size`; e_i and the matching part of
    p_u have `embedding_size` dimensions. The loss sums the four BPR tasks of the paper over (user, positive i,
    warm negative j): N-N, C-C, N-C and C-N, i.e. BPR(q_i^N, q_j^N) + BPR(q_i^C, q_j^C) + BPR(q_i^N, q_j^C) +
    BPR(q_i^C, q_j^N). At inference, warm items use q^N and every other item q^C: the counterfactual replacement of
    its preference part by zeros, whatever its (never trained) ID embedding holds.

    Deviations from the paper:
      - x_i concatenates all M modalities; the content encoder g is an MLP over pre-extracted features.
      - Regularisation: `reg_weight` times the batch mean of ||p_u||^2 + ||q_i^N||^2 + ||q_j^N||^2 (the paper
        puts L2 on the model parameters).
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "content_embedding_size": positive_int(),
        "content_hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.content_embedding_size = self.options["content_embedding_size"]
        self.reg_weight = float(self.options["reg_weight"])
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size + self.content_embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.content_encoder = mlp(self.content_size, self.options["content_hidden_sizes"],
                                   self.content_embedding_size, self.options["activation"])
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def _normal_and_counterfactual(self, content: ItemContent, items: torch.Tensor):
        encoded = self.content_encoder(content.concatenated())
        ids = self.item_id_embedding(items)
        return torch.cat([ids, encoded], dim=1), torch.cat([torch.zeros_like(ids), encoded], dim=1)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        encoded = self.content_encoder(content.concatenated())
        if items is None:
            ids = encoded.new_zeros((encoded.shape[0], self.embedding_size))
        else:
            ids = self.item_id_embedding(items) * self._warm_mask(items, encoded)
        return torch.cat([ids, encoded], dim=1)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        normal, counterfactual = self._normal_and_counterfactual(self.training_content(items), items)
        user_e = self.user_embedding(interaction[self.USER_ID])
        pos_n = (user_e * normal[pos]).sum(dim=1)
        neg_n = (user_e * normal[neg]).sum(dim=1)
        pos_c = (user_e * counterfactual[pos]).sum(dim=1)
        neg_c = (user_e * counterfactual[neg]).sum(dim=1)
        loss = bpr_loss(pos_n, neg_n) + bpr_loss(pos_c, neg_c) + bpr_loss(pos_n, neg_c) + bpr_loss(pos_c, neg_n)
        return loss + self.reg_weight * squared_norm(user_e, normal[pos], normal[neg])
