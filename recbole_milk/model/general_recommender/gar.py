"""GAR (Chen et al., SIGIR 2022, "Generative Adversarial Framework for Cold-Start Item Recommendation").

A generator maps an item's content into the space of pre-trained warm CF embeddings. A recommender scores users
against item embeddings and is trained adversarially against the generator: it learns to rank a user's real
positive embedding above the generated one (and above real negatives), while the generator learns to produce
embeddings the recommender ranks as highly as the real ones. A new item is scored as <recommender(user),
recommender(generated embedding)>.
"""
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from torch.func import functional_call

from recbole_milk.model.abstract_recommender import TwoStageRecommender
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.layers import ACTIVATION_RULE, mlp
from recbole_milk.options import HIDDEN_SIZES, SHARE, positive_int


def frozen(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`module(inputs)` with the module's parameters treated as constants: gradients reach `inputs` only."""
    return functional_call(module, {name: p.detach() for name, p in module.named_parameters()}, (inputs,))


class GAR(TwoStageRecommender):
    r"""GAR: generator G(x_i) against recommender R(u, e) = <f_U(U_u), f_I(e)>.

    U, V: frozen pre-trained warm CF embeddings (TwoStageRecommender). x_i: the M modalities concatenated (each
    imputed, L2-normalised if normalize_features). G: MLP with hidden layers `generator_hidden_sizes` to the CF
    size. f_U, f_I: MLPs with hidden layers `hidden_sizes` to `embedding_size`. Score: R(u, V_i) for warm items,
    R(u, G(x_i)) for every other item.

    Losses on (user u, positive i, warm negative j), w = `generated_negative_weight`, s = `similarity_weight`:
      recommender  L_R = -log sigmoid(R(u, V_i) - (1 - w) R(u, V_j) - w R(u, G(x_i)))
      generator    L_G = -(1 - s) log sigmoid(R(u, G(x_i)) - R(u, V_i)) + s ||G(x_i) - V_i||_1
    both batch means. The recommender maximises the gap between a real positive and the generated one, the
    generator closes it: each player's gradient comes from its own loss only (G's output is detached in L_R, R's
    parameters are constants in L_G).

    Training loop: calculate_loss returns L_R + L_G, and one step of RecBole's Trainer updates both players from
    the same batch (simultaneous updates). The authors alternate one recommender step and one generator step on
    each batch with two Adam optimisers of equal learning rate; with the gradients separated as above, the only
    difference is that the generator's step sees the recommender before, not after, that batch's update. This
    keeps RecBole's Trainer, its checkpoints, resuming and gradient clipping unchanged.

    Deviations from the paper and the authors' code:
      - Simultaneous instead of alternating updates (above).
      - No batch normalisation or dropout in the MLPs, and no L2 kernel regulariser (use weight_decay); one
        `activation` for both players (authors: tanh in the generator, leaky ReLU in the recommender).
      - Pairs are the pipeline's positives with uniformly drawn warm negatives.
    """

    option_rules = {
        **TwoStageRecommender.option_rules,
        "embedding_size": positive_int(),
        "hidden_sizes": HIDDEN_SIZES,
        "generator_hidden_sizes": HIDDEN_SIZES,
        "activation": ACTIVATION_RULE,
        "generated_negative_weight": SHARE,
        "similarity_weight": SHARE,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.embedding_size = self.options["embedding_size"]
        self.generated_negative_weight = float(self.options["generated_negative_weight"])
        self.similarity_weight = float(self.options["similarity_weight"])
        activation = self.options["activation"]
        self.generator = mlp(self.content_size, self.options["generator_hidden_sizes"], self.cf_size, activation)
        self.user_tower = mlp(self.cf_size, self.options["hidden_sizes"], self.embedding_size, activation)
        self.item_tower = mlp(self.cf_size, self.options["hidden_sizes"], self.embedding_size, activation)
        self.apply(xavier_normal_initialization)

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_tower(self.user_cf if users is None else self.user_cf[users])

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.item_tower(self.warm_or_generated(self.generator(content.concatenated()), items))

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users, pos_items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        neg_items = interaction[self.NEG_ITEM_ID]
        distinct, inverse = torch.unique(pos_items, return_inverse=True)
        generated = self.generator(self.training_content(distinct).concatenated())[inverse]
        real_pos, real_neg = self.item_cf[pos_items], self.item_cf[neg_items]
        user_cf = self.user_cf[users]

        # Recommender: real positive above real negative and above the (constant) generated positive.
        user_r = self.user_tower(user_cf)
        items_r = self.item_tower(torch.cat([real_pos, real_neg, generated.detach()])).view(3, len(users), -1)
        real_score, neg_score, fake_score = (user_r.unsqueeze(0) * items_r).sum(dim=2)
        w = self.generated_negative_weight
        recommender_loss = F.softplus(-(real_score - (1.0 - w) * neg_score - w * fake_score)).mean()

        # Generator: against the recommender as it stands, with the recommender's parameters held constant.
        fooled_score = (frozen(self.user_tower, user_cf) * frozen(self.item_tower, generated)).sum(dim=1)
        s = self.similarity_weight
        generator_loss = (1.0 - s) * F.softplus(-(fooled_score - real_score.detach())).mean()
        generator_loss = generator_loss + s * (generated - real_pos).abs().sum(dim=1).mean()
        return recommender_loss + generator_loss
