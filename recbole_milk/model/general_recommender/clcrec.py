"""CLCRec (Wei et al., ACM MM 2021, "Contrastive Learning for Cold-Start Recommendation").

Users and warm items have collaborative ID embeddings; a content encoder maps an item's content into the same
space. Two contrastive objectives tie them together: a user-item contrast in which some items are represented by
their content instead of their ID embedding, and an item-level contrast between an item's ID embedding and its
content encoding. A new item is scored through its content encoding alone.
"""
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import ContentRecommender
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, mlp
from recbole_milk.model.loss import contrastive_loss
from recbole_milk.options import (
    HIDDEN_SIZES,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    positive_int,
)


def replace_by_content(ids: torch.Tensor, encoded: torch.Tensor, rate: float) -> torch.Tensor:
    """Rows of `ids`, each replaced by its row of `encoded` with probability `rate` (the paper's random
    replacement, which trains the user-item contrast on content representations as well)."""
    replaced = torch.rand(ids.shape[0], 1, device=ids.device) < rate
    return torch.where(replaced, encoded, ids)


class CLCRec(ContentRecommender):
    r"""CLCRec: user-item (U-I) and item ID-content (R-E) contrastive learning.

    p_u, e_i: ID embeddings of users and items (`embedding_size`); c_i = f(x_i): the content encoder, an MLP with
    hidden layers `content_hidden_sizes` over the M modalities concatenated (each imputed, L2-normalised if
    normalize_features). Score: <p_u, e_i> for warm items, <p_u, c_i> for every other item, whatever its (never
    trained) ID embedding holds.

    Loss on a batch of (user, positive) rows with candidate negatives j:
      L_UI = -log exp(<p_u, h_i> / t) / sum_{k in {i} + negatives} exp(<p_u, h_k> / t), where h_k is e_k, or c_k
             for a random share `content_replace_rate` of the batch's items (the paper's random replacement);
      L_RE = the same InfoNCE with anchor e_i / ||e_i|| against c_k / ||c_k||: an item's ID embedding must pick
             out its own content among the negatives' contents;
      loss = `content_contrast_weight` * L_RE + (1 - `content_contrast_weight`) * L_UI
             + `reg_weight` * (mean ||p_u|| + mean ||e_k||) / 2 over the batch's users and items.
    t is `temperature`. Defaults are the authors' published settings: t = 2, weight 0.5 and replacement 0.5 from
    their MovieLens command, 512 negatives and reg 0.001 from their Amazon command. (Their MovieLens reg 0.1
    shrinks the ID embeddings faster than the contrast grows them here: on TikTok FTMT, 60 epochs, validation
    NDCG@10 0.0077 with 0.1 against 0.0164 with 0.001.)

    Cost: negatives are shared by the rows of a batch: the first `num_negatives` warm negatives the plugin's
    sampler drew for the batch. Each distinct item of the batch is encoded once, scores are one (B x K) matrix
    product, and nothing is computed for items outside the batch. At batch 2048 and 512 negatives that is at most
    2,560 encoded items and a 2048 x 512 score matrix per step.

    Deviations from the paper:
      - Negatives are shared within a batch (the authors draw 512 per row) and are the sampler's uniform warm
        negatives, which exclude the row user's training positives; a shared negative equal to a row's own
        positive is left out of that row's softmax, but may be another positive of the row's user.
      - Replacement by content is drawn per distinct item of the batch, not per (row, item) occurrence.
      - x_i concatenates all M modalities (pre-extracted features); the encoder is an MLP over them.
    """

    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "content_hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "temperature": POSITIVE,
        "num_negatives": positive_int(),
        "content_replace_rate": SHARE,
        "content_contrast_weight": SHARE,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.temperature = float(self.options["temperature"])
        self.num_negatives = self.options["num_negatives"]
        self.content_replace_rate = float(self.options["content_replace_rate"])
        self.content_contrast_weight = float(self.options["content_contrast_weight"])
        self.reg_weight = float(self.options["reg_weight"])
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.content_encoder = mlp(self.content_size, self.options["content_hidden_sizes"], self.embedding_size,
                                   self.options["activation"])
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.id_or_content(self.item_id_embedding, self.content_encoder(content.concatenated()), items)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users, pos_items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        neg_items = interaction[self.NEG_ITEM_ID][: self.num_negatives]
        items, inverse = torch.unique(torch.cat([pos_items, neg_items]), return_inverse=True)
        pos, neg = inverse[: pos_items.shape[0]], inverse[pos_items.shape[0]:]
        same = neg_items.unsqueeze(0) == pos_items.unsqueeze(1)

        ids = self.item_id_embedding(items)
        encoded = self.content_encoder(self.training_content(items).concatenated())
        user_e = self.user_embedding(users)

        mixed = replace_by_content(ids, encoded, self.content_replace_rate)
        user_item = contrastive_loss(user_e, mixed[pos], mixed[neg], same, self.temperature)

        ids_unit, encoded_unit = F.normalize(ids, dim=1), F.normalize(encoded, dim=1)
        id_content = contrastive_loss(ids_unit[pos], encoded_unit[pos], encoded_unit[neg], same, self.temperature)

        weight = self.content_contrast_weight
        reg = (user_e.norm(dim=1).mean() + ids.norm(dim=1).mean()) / 2
        return weight * id_content + (1.0 - weight) * user_item + self.reg_weight * reg
