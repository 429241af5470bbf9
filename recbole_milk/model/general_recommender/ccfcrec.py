"""CCFCRec (Zhou et al., WWW 2023, "Contrastive Collaborative Filtering for Cold-Start Item Recommendation").

Two collaborative filtering modules share the users: a content CF module computes an item's content-based
collaborative embedding from its content, and a co-occurrence CF module learns an ID embedding that memorises the
item's co-occurrence signals in the warm interactions. Both are trained on the ranking task, and a contrastive loss
pulls each item's content-based embedding towards its own co-occurrence embedding and away from other items', so
that the content module absorbs what co-occurrence teaches. A new item has only the content module.
"""
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import ContentRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, AttentiveContentEncoder
from recbole_milk.model.loss import bpr_loss, contrastive_loss, squared_norm
from recbole_milk.options import HIDDEN_SIZES, NON_NEGATIVE, POSITIVE, positive_int


class CCFCRec(ContentRecommender):
    r"""CCFCRec: content CF module q_i = g(x_i), co-occurrence CF module v_i (item ID embedding), shared users p_u.

    g is AttentiveContentEncoder over the M modalities (each imputed, L2-normalised if normalize_features), with
    output MLP hidden layers `content_hidden_sizes`; all embeddings have `embedding_size` dimensions. Score:
    <p_u, v_i> for warm items, <p_u, q_i> for every other item, whatever its (never trained) v_i holds (the
    paper's applying phase uses q_i for cold items).

    Loss on (user, positive i, warm negative j) triples:
      BPR(<p_u, q_i>, <p_u, q_j>) + BPR(<p_u, v_i>, <p_u, v_j>)      (both CF modules on the ranking task)
      + `contrast_weight` * L_C                                      (contrastive CF)
      + `reg_weight` * batch mean of ||p_u||^2 + ||v_i||^2 + ||v_j||^2,
    L_C = -log exp(cos(q_i, v_i) / t) / sum_{k in {i} + negatives} exp(cos(q_i, v_k) / t), t = `temperature`:
    an item's content-based embedding must pick out its own co-occurrence embedding among those of
    `num_negatives` warm negatives. The negatives are shared by the rows of a batch (the first `num_negatives`
    negatives the sampler drew for it; one equal to a row's positive is left out of that row's softmax), so the
    contrast costs one (B x num_negatives) matrix product.

    Deviations from the paper:
      - Item content here is M dense modality vectors, not categorical attributes plus an image feature: the
        attention pools one embedding per modality.
      - Contrastive negatives are shared within a batch (the sampler's uniform warm negatives, which exclude the
        row user's training positives) instead of drawn per item.
      - The ranking loss is BPR with one warm negative per positive, the shared protocol of the plugin's baselines.
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "content_hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "temperature": POSITIVE,
        "num_negatives": positive_int(),
        "contrast_weight": NON_NEGATIVE,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.temperature = float(self.options["temperature"])
        self.num_negatives = self.options["num_negatives"]
        self.contrast_weight = float(self.options["contrast_weight"])
        self.reg_weight = float(self.options["reg_weight"])
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.content_encoder = AttentiveContentEncoder(self.modality_sizes, self.embedding_size,
                                                       self.options["content_hidden_sizes"], self.options["activation"])
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.id_or_content(self.item_embedding, self.content_encoder(content.concatenated()), items)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        pos_items, neg_items = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        items, pos, neg = batch_items(pos_items, neg_items)
        content_cf = self.content_encoder(self.training_content(items).concatenated())
        cooccurrence_cf = self.item_embedding(items)
        user_e = self.user_embedding(interaction[self.USER_ID])

        def ranking(represented: torch.Tensor) -> torch.Tensor:
            return bpr_loss((user_e * represented[pos]).sum(dim=1), (user_e * represented[neg]).sum(dim=1))

        loss = ranking(content_cf) + ranking(cooccurrence_cf)
        loss = loss + self.contrast_weight * self._contrast(content_cf, cooccurrence_cf, pos, neg, pos_items, neg_items)
        return loss + self.reg_weight * squared_norm(user_e, cooccurrence_cf[pos], cooccurrence_cf[neg])

    def _contrast(self, content_cf: torch.Tensor, cooccurrence_cf: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                  pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        """L_C of the batch: rows of the representations are the batch's distinct items, `pos` / `neg` index them."""
        count = self.num_negatives
        same = neg_items[:count].unsqueeze(0) == pos_items.unsqueeze(1)
        anchors = F.normalize(content_cf[pos], dim=1)
        targets = F.normalize(cooccurrence_cf, dim=1)
        return contrastive_loss(anchors, targets[pos], targets[neg[:count]], same, self.temperature)
