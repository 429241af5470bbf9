"""Heater (Zhu et al., SIGIR 2020, "Recommendation for New Users and New Items via Randomized Training and
Mixture-of-Experts Transformation").

A mixture of distinct experts maps an item's content into the space of pre-trained CF embeddings and is pulled
towards the item's CF embedding. Randomized training swaps an item's CF embedding for its content transform, so
the shared recommendation layers learn to score from either; a new item is scored from its content transform.
"""
from typing import Any, Optional

import torch
from recbole.model.init import xavier_normal_initialization

from recbole_milk.model.abstract_recommender import TwoStageRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, MixtureOfExperts, mlp
from recbole_milk.model.loss import squared_norm
from recbole_milk.options import HIDDEN_SIZES, NON_NEGATIVE, RATIO, positive_int


class Heater(TwoStageRecommender):
    r"""Heater: content-to-CF alignment by a mixture of experts, randomized training, shared transformations.

    psi_v = MoE(x_v) (x_v: the M modalities concatenated, each imputed, L2-normalised if normalize_features), in the
    space of the frozen pre-trained warm CF embeddings U, V (TwoStageRecommender). Item input: V_v for a warm item,
    psi_v for every other item; in training a warm item's V_v is replaced by psi_v with probability
    `random_replace_rate` (randomized training). Representations: item g_V(input), user g_U(U_u), MLPs with hidden
    layers `hidden_sizes` to `embedding_size`; score: their inner product. Loss: mean squared error of the score to
    the pre-trained score U_u^T V_v over the batch's (u, pos) and (u, neg) pairs + `align_weight` * batch mean of
    ||psi_v - V_v||^2 over its distinct warm items (the paper's similarity constraint) + `reg_weight` * batch mean
    of the squared representation norms.

    Deviations from the paper:
      - Users have no content here: no user mixture of experts and no user randomized training (the new-item
        protocol has no new users).
      - Experts are affine maps of the content; the recommendation loss regresses onto the pre-trained CF
        scores (DropoutNet's objective, on which Heater builds), over the pipeline's positives and warm negatives.
    """

    option_rules = {
        **TwoStageRecommender.option_rules,
        "embedding_size": positive_int(),
        "hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "num_experts": positive_int(),
        "random_replace_rate": RATIO,
        "align_weight": NON_NEGATIVE,
        "reg_weight": NON_NEGATIVE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.random_replace_rate = float(self.options["random_replace_rate"])
        self.align_weight = float(self.options["align_weight"])
        self.reg_weight = float(self.options["reg_weight"])
        hidden, activation = self.options["hidden_sizes"], self.options["activation"]
        self.content_experts = MixtureOfExperts(self.content_size, self.cf_size, self.options["num_experts"])
        self.user_transform = mlp(self.cf_size, hidden, self.embedding_size, activation)
        self.item_transform = mlp(self.cf_size, hidden, self.embedding_size, activation)
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_transform(self.user_cf if users is None else self.user_cf[users])

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.item_transform(self.warm_or_generated(self.content_experts(content.concatenated()), items))

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        aligned = self.content_experts(self.training_content(items).concatenated())
        item_cf = self.item_cf[items]
        warm = self.warm_items[items].unsqueeze(1)
        replaced = torch.rand(items.shape[0], 1, device=aligned.device) < self.random_replace_rate
        represented = self.item_transform(torch.where(warm & ~replaced, item_cf, aligned))

        user_r = self.user_representations(users)
        loss = self.cf_regression_loss(user_r, represented[pos], represented[neg], users, item_cf[pos], item_cf[neg])

        warm_rows = warm.squeeze(1).to(aligned.dtype)
        distance = (aligned - item_cf).pow(2).sum(dim=1)
        loss = loss + self.align_weight * (distance * warm_rows).sum() / warm_rows.sum().clamp(min=1.0)
        return loss + self.reg_weight * squared_norm(user_r, represented[pos], represented[neg])
