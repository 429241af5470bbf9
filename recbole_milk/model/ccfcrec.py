"""CCFCRec (Zhou et al., WWW 2023, "Contrastive Collaborative Filtering for Cold-Start Item Recommendation").

Two collaborative filtering modules share the users: a content CF module computes an item's content-based
collaborative embedding from its content, and a co-occurrence CF module learns an ID embedding that memorises the
item's co-occurrence signals in the warm interactions. Both are trained on the ranking task, and a contrastive loss
pulls each item's content-based embedding towards its own co-occurrence embedding and away from other items', so
that the content module absorbs what co-occurrence teaches. A new item has only the content module.
"""
from typing import Any, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.clcrec import contrastive_loss
from recbole_milk.model.content import (
    ACTIVATION_RULE,
    HIDDEN_SIZES_RULE,
    ContentRecommender,
    batch_items,
    bpr_loss,
    mlp,
    squared_norm,
)
from recbole_milk.options import NON_NEGATIVE, in_range, positive_int

POSITIVE = in_range(0.0, float("inf"), low_open=True, high_open=True)


class AttentiveContentEncoder(nn.Module):
    """Content CF module: one embedding per modality (an affine map of its rows), pooled with attention weights
    softmax_m(w^T tanh(A h_m + b)), then an MLP. The paper pools attribute embeddings this way; modalities play
    the attributes' part here."""

    def __init__(self, modality_sizes: List[int], embedding_size: int, hidden_sizes: List[int], activation: str):
        super().__init__()
        self.modality_sizes = list(modality_sizes)
        self.projections = nn.ModuleList(nn.Linear(size, embedding_size) for size in modality_sizes)
        self.attention = nn.Sequential(nn.Linear(embedding_size, embedding_size), nn.Tanh(),
                                       nn.Linear(embedding_size, 1, bias=False))
        self.output = mlp(embedding_size, hidden_sizes, embedding_size, activation)

    def attention_weights(self, embedded: torch.Tensor) -> torch.Tensor:
        """(n, M) weights on the simplex from per-modality embeddings (n, M, d)."""
        # exp(s - logsumexp s) is the softmax; torch.softmax's CPU kernel stalls on thread hand-offs when the
        # cores are shared, even for (n, 2) inputs.
        scores = self.attention(embedded).squeeze(2)
        return (scores - torch.logsumexp(scores, dim=1, keepdim=True)).exp()

    def embed_modalities(self, content: torch.Tensor) -> torch.Tensor:
        """(n, M, d) per-modality embeddings of concatenated content rows (n, sum d_m)."""
        parts = torch.split(content, self.modality_sizes, dim=1)
        return torch.stack([projection(part) for projection, part in zip(self.projections, parts)], dim=1)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        embedded = self.embed_modalities(content)
        pooled = (self.attention_weights(embedded).unsqueeze(2) * embedded).sum(dim=1)
        return self.output(pooled)


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
        "content_hidden_sizes": HIDDEN_SIZES_RULE,
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
        sizes = [x.shape[1] for x in dataset.item_features]
        self.content_encoder = AttentiveContentEncoder(sizes, self.embedding_size,
                                                       self.options["content_hidden_sizes"], self.options["activation"])
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def represent_items(self, content: torch.Tensor, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.id_or_content(self.item_embedding, self.content_encoder(content), items)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        pos_items, neg_items = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        items, pos, neg = batch_items(pos_items, neg_items)
        content_cf = self.content_encoder(self.item_content[items])
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
