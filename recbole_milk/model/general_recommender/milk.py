"""MILK (Bai et al., SIGIR 2024): new-item recommendation from multimodal content with missing modalities.

An item is its content: one extractor per modality maps the item's (imputed, optionally L2-normalised) feature rows
to the embedding space, and the item representation is a fusion of those outputs. Users have a free ID embedding.
Training adds a masked cross-modality alignment loss (CMAM) and BPR losses over cyclic-mixup fusion environments
whose mean and variance are penalised (CEIM). See milk-spec.md section 2.

Options of ours, beyond the paper (all off by default): MLP extractors (`extractor_hidden_sizes`), a learned
embedding or a cross-modal prediction for a missing modality (`missing_modality`), fusion over the available
modalities or with learned weights (`fusion`), lazy Adam on the user table (`sparse_user_gradients`), and, from
the content base, missing-aware training (`modality_dropout`) and per-pattern score calibration
(`score_calibration`). properties/recommended/MILK.yaml combines them (--preset=recommended).
"""
import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_milk.errors import ConfigError
from recbole_milk.model.abstract_recommender import ContentRecommender, batch_items
from recbole_milk.model.content_inputs import ItemContent
from recbole_milk.model.environments import (
    EnvironmentSampler,
    combine_environment_losses,
)
from recbole_milk.model.layers import (
    ACTIVATION_RULE,
    CrossModalImputer,
    ModalityExtractors,
)
from recbole_milk.model.loss import alignment_loss, masked_mse
from recbole_milk.options import (
    BOOLEAN,
    HIDDEN_SIZES,
    NON_NEGATIVE,
    in_range,
    one_of,
    positive_int,
)

SPARSE_GRADIENTS_KEY = "sparse_user_gradients"
SPARSE_GRADIENTS_RULE = ((lambda value: value in (True, False, "auto")), "true, false or auto")


def _option(config: Any, key: str, default: Any = None) -> Any:
    """config[key] of a RecBole Config (None when unset) or of a plain dict; `default` when unset."""
    try:
        value = config[key]
    except KeyError:
        return default
    return default if value is None else value


def dense_gradient_options(config: Any) -> List[str]:
    """The options set in `config` that lazy Adam cannot honour, each with what it would have to be."""
    conflicts = []
    if str(_option(config, "learner", "adam")).lower() != "adam":
        conflicts.append(f"learner = {_option(config, 'learner')!r} (must be adam)")
    if _option(config, "weight_decay"):
        conflicts.append(f"weight_decay = {_option(config, 'weight_decay')!r} (must be 0; use reg_weight)")
    if _option(config, "clip_grad_norm"):
        conflicts.append(f"clip_grad_norm = {_option(config, 'clip_grad_norm')!r} (must be ~)")
    if _option(config, "enable_scaler"):
        conflicts.append("enable_scaler = True (must be False)")
    return conflicts


def lazy_user_updates(config: Any) -> bool:
    """Whether the user table trains with sparse gradients and lazy Adam: `sparse_user_gradients` true, or auto
    with no option that needs dense gradients."""
    value = _option(config, SPARSE_GRADIENTS_KEY)
    return value is True or (value == "auto" and not dense_gradient_options(config))


class MILK(ContentRecommender):
    r"""MILK: multimodality invariant learning for new-item recommendation, as a pairwise RecBole model.

    Per modality m an extractor gives c_j^m; a missing modality's c_j^m is the extractor applied to the imputed row
    (the paper), a learned vector e^m, or a prediction from the item's available modalities (`missing_modality`).
    The item is z_j = mean over modalities (`fusion: all`, paper eq. 18), over its available ones (`available`), or
    the available ones weighted by learned weights softmax(w) (`learned`, which replaces the environments and so
    needs use_invariance false); training scores each environment e as sum_m w_em <u_i, c_j^m> with fusion weights
    w_e from EnvironmentSampler.
    """

    min_modalities = 2
    option_rules = {
        **ContentRecommender.option_rules,
        "embedding_size": positive_int(),
        "reg_weight": NON_NEGATIVE,
        "invariance_weight": NON_NEGATIVE,
        "align_weight": NON_NEGATIVE,
        "dirichlet_alpha": in_range(0.0, math.inf, low_open=True, high_open=True),
        "env_loss_reduction": one_of("sum", "mean"),
        "use_alignment": BOOLEAN,
        "use_invariance": BOOLEAN,
        "include_equal_env": BOOLEAN,
        "cyclic_shift": BOOLEAN,
        "resample_envs": BOOLEAN,
        "fusion": one_of("all", "available", "learned"),
        "missing_modality": one_of("imputed", "learned", "cross_modal"),
        "imputation_weight": NON_NEGATIVE,
        "extractor_hidden_sizes": HIDDEN_SIZES,
        "extractor_activation": ACTIVATION_RULE,
        SPARSE_GRADIENTS_KEY: SPARSE_GRADIENTS_RULE,
    }

    @classmethod
    def check_options(cls, config: Dict[str, Any]) -> None:
        super().check_options(config)
        if config.get("fusion") == "learned" and config.get("use_invariance") is not False:
            raise ConfigError("Option 'fusion' = 'learned' needs use_invariance: false: learned fusion weights replace "
                              "the invariance environments' mixing weights. Set use_invariance: false, or another "
                              "fusion.")
        # Lazy Adam has no weight decay, and gradient clipping and AMP scaling need dense gradients: when asked for
        # explicitly, say so now rather than fail in the first training step (auto falls back to dense Adam).
        conflicts = dense_gradient_options(config) if _option(config, SPARSE_GRADIENTS_KEY) is True else []
        if conflicts:
            raise ConfigError(
                f"Option '{SPARSE_GRADIENTS_KEY}' = True cannot be combined with " + ", ".join(conflicts)
                + f": the user table is then trained by lazy Adam. Change those options or set "
                f"{SPARSE_GRADIENTS_KEY}: auto (dense Adam where lazy Adam cannot apply) or false.")

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        options = self.options
        self.embedding_size = options["embedding_size"]
        self.reg_weight = float(options["reg_weight"])
        self.invariance_weight = float(options["invariance_weight"])
        self.align_weight = float(options["align_weight"])
        self.imputation_weight = float(options["imputation_weight"])
        self.env_loss_reduction = options["env_loss_reduction"]
        self.use_alignment = options["use_alignment"]
        self.use_invariance = options["use_invariance"]
        self.fusion = options["fusion"]
        self.missing_modality = options["missing_modality"]

        # Lazy: a step updates only the batch's user rows, so epoch time stays linear in interactions as users
        # grow. Dense is the authors' optimiser; both reach the same accuracy (README). With auto the table is
        # built dense, so any optimiser works on it, and the plugin's trainer switches it (use_lazy_updates).
        self.lazy_user_updates = lazy_user_updates(config)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size,
                                           sparse=_option(config, SPARSE_GRADIENTS_KEY) is True)
        self.extractors = ModalityExtractors(self.modality_sizes, self.embedding_size,
                                             options["extractor_hidden_sizes"], options["extractor_activation"])
        self.imputer = CrossModalImputer(self.num_modalities, self.embedding_size) \
            if self.missing_modality == "cross_modal" else None
        self.apply(xavier_normal_initialization)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        if self.missing_modality == "learned":
            self.missing_embedding = nn.Parameter(torch.zeros(self.num_modalities, self.embedding_size))
        if self.fusion == "learned":  # zeros: equal weights at the start, the paper's fusion
            self.fusion_logits = nn.Parameter(torch.zeros(self.num_modalities))

        self.environments = EnvironmentSampler(
            self.num_modalities,
            options["dirichlet_alpha"],
            include_equal_env=options["include_equal_env"],
            cyclic_shift=options["cyclic_shift"],
            resample=options["resample_envs"],
            seed=config["seed"] or 0,
        )

    # ----- item and user representations (shared by training, evaluation and serving) --------------------------

    def complete(self, extracted: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
        """Per-modality embeddings (n, M, D) with each missing modality's replaced as `missing_modality` says."""
        if self.missing_modality == "imputed":
            return extracted
        if self.missing_modality == "learned":
            filled = self.missing_embedding.unsqueeze(0).to(extracted.dtype)
        else:
            filled = self.imputer.predict(extracted, availability)
        return torch.where(availability.unsqueeze(-1), extracted, filled)

    def fuse(self, embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
        """Inference fusion: the mean of all M embeddings (`all`, paper eq. 18), of the available modalities only
        (`available`), or of the available ones weighted by softmax(fusion_logits) (`learned`). An item with no
        available modality falls back to all M, equally weighted."""
        if self.fusion == "all":
            return embeddings.mean(dim=1)
        weights = availability.to(embeddings.dtype)
        if self.fusion == "learned":
            weights = weights * torch.softmax(self.fusion_logits, dim=0).to(embeddings.dtype)
        weights = self._available_weights(weights)
        return (embeddings * weights.unsqueeze(-1)).sum(dim=1)

    @staticmethod
    def _available_weights(weights: torch.Tensor) -> torch.Tensor:
        """Rows of (..., M) non-negative weights renormalised to sum 1; an all-zero row becomes uniform."""
        weights = torch.where(weights.sum(dim=-1, keepdim=True) > 0, weights, torch.ones_like(weights))
        return weights / weights.sum(dim=-1, keepdim=True)

    def use_lazy_updates(self) -> None:
        """Give the user table sparse gradients, for lazy Adam; the trainer calls this when lazy_user_updates."""
        self.user_embedding.sparse = True

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        embeddings = self.complete(self.extractors(content.rows), content.availability)
        return self.fuse(embeddings, content.availability)

    def random_state(self) -> Dict[str, torch.Tensor]:
        """State of the private environment generator and its drawn-ahead rows, saved in resume points so a resumed
        run draws on."""
        state = self.environments.state()
        return {"environments": state["generator"], "environments_pending": state["pending"]}

    def load_random_state(self, state: Dict[str, torch.Tensor]) -> None:
        # Resume points written before draws were buffered hold the generator alone: nothing was drawn ahead.
        pending = state.get("environments_pending", torch.empty(0, self.num_modalities))
        self.environments.load_state({"generator": state["environments"], "pending": pending})

    # ----- training --------------------------------------------------------------------------------------------

    def _training_weights(self, like: torch.Tensor) -> torch.Tensor:
        """(E, M) fusion weights of this step's environments: the CEIM environments, the learned fusion, or the
        equal-weight fusion alone."""
        if self.use_invariance:
            return self.environments().to(device=like.device, dtype=like.dtype)
        if self.fusion == "learned":
            return torch.softmax(self.fusion_logits, dim=0).unsqueeze(0)
        return torch.full((1, self.num_modalities), 1.0 / self.num_modalities, device=like.device, dtype=like.dtype)

    def _environment_differences(self, embeddings: torch.Tensor, availability: torch.Tensor, user_e: torch.Tensor,
                                 pos: torch.Tensor, neg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, E): negative minus positive score under every environment's fusion weights, from the batch's distinct
        items' per-modality embeddings (U, M, D) and the pairs' indices into them."""
        if self.fusion == "all":
            # Scores are linear in the fusion weights: score under env e = sum_m w_em <u, c^m>, so one per-modality
            # score difference per pair serves every environment.
            pair = embeddings.index_select(0, neg) - embeddings.index_select(0, pos)
            return (pair * user_e.unsqueeze(1)).sum(dim=-1) @ weights.t()

        def mixed(index: torch.Tensor) -> torch.Tensor:
            scores = (embeddings.index_select(0, index) * user_e.unsqueeze(1)).sum(dim=-1)
            available = availability.index_select(0, index).to(scores.dtype)
            per_item = self._available_weights(weights.unsqueeze(0) * available.unsqueeze(1))
            return (per_item * scores.unsqueeze(1)).sum(dim=-1)

        return mixed(neg) - mixed(pos)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        # Every per-item quantity is computed once per distinct item of the batch and gathered by the pairs.
        items, pos, neg = batch_items(interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        content = self.training_content(items)
        extracted = self.extractors(content.rows)
        embeddings = self.complete(extracted, content.availability)
        user_e = self.user_embedding(users)

        weights = self._training_weights(user_e)
        differences = self._environment_differences(embeddings, content.availability, user_e, pos, neg, weights)
        env_losses = F.softplus(differences).mean(dim=0)
        if self.use_invariance:
            loss = combine_environment_losses(env_losses, self.env_loss_reduction, self.invariance_weight)
        else:
            loss = env_losses[0]

        if self.use_alignment:
            # Over the batch's distinct positive items: the other items' modalities count as unavailable.
            is_positive = torch.zeros_like(items, dtype=torch.bool).index_fill_(0, pos, True)
            loss = loss + self.align_weight * alignment_loss(extracted, content.availability & is_positive.unsqueeze(1))
        if self.imputer is not None:
            # Fit the imputer to predict each available modality from the others, leaving the extractors alone.
            target = extracted.detach()
            fitted = content.availability & CrossModalImputer.has_other(content.availability)
            loss = loss + self.imputation_weight * masked_mse(self.imputer.predict(target, content.availability),
                                                               target, fitted)

        # Batch means of ||u||^2 + ||z_pos||^2 + ||z_neg||^2, with each item's ||z||^2 computed once.
        item_norms = self.fuse(embeddings, content.availability).pow(2).sum(dim=1)
        reg = user_e.pow(2).sum(dim=1).mean() + item_norms.index_select(0, pos).mean() \
            + item_norms.index_select(0, neg).mean()
        return loss + self.reg_weight * reg
