"""DUIF (Geng et al., ICCV 2015, "Learning Image and User Features for Recommendation in Social Networks").

A content-only model: a user is a free latent vector, an item is its content mapped by a deep network into the
same space, and the score is their inner product. With no item ID parameter, warm and new items are represented
the same way, from content alone.
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


class DUIF(ContentRecommender):
    r"""DUIF: user embedding against an MLP projection of the item's concatenated modality features.

    score(u, i) = <p_u, f(x_i)>, x_i = [x_i^1; ...; x_i^M] (each modality imputed, L2-normalised if
    normalize_features), f an MLP with hidden layers `content_hidden_sizes`.

    Deviations from the paper:
      - The paper learns f as a CNN over raw images. Datasets here carry pre-extracted feature vectors, so f is an
        MLP over them (the CNN's role), and it takes all M modalities concatenated, not only images.
      - Trained with BPR on (user, positive, warm negative) triples, the shared pairwise protocol of the plugin's
        baselines, plus `reg_weight` times the batch mean of ||p_u||^2 + ||f(x_pos)||^2 + ||f(x_neg)||^2.
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "content_hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.reg_weight = float(self.options["reg_weight"])
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.content_encoder = mlp(self.content_size, self.options["content_hidden_sizes"], self.embedding_size,
                                   self.options["activation"])
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.content_encoder(content.concatenated())

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        represented = self.represent_items(self.training_content(items), items)
        user_e = self.user_embedding(interaction[self.USER_ID])
        pos_e, neg_e = represented[pos], represented[neg]
        loss = bpr_loss((user_e * pos_e).sum(dim=1), (user_e * neg_e).sum(dim=1))
        return loss + self.reg_weight * squared_norm(user_e, pos_e, neg_e)
