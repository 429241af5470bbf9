"""MILK (Bai et al., SIGIR 2024): new-item recommendation from multimodal content with missing modalities.

An item is its content: one affine extractor per modality maps the item's (imputed, optionally L2-normalised)
feature rows to the embedding space, and the item representation is a fusion of those outputs. Users have a free
ID embedding. Training adds a masked cross-modality alignment loss (CMAM) and BPR losses over cyclic-mixup fusion
environments whose mean and variance are penalised (CEIM). See milk-spec.md section 2.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType

from recbole_milk.model.content import (
    ItemRepresentationCache,
    check_item_inputs,
    prepare_modalities,
    read_modalities,
    read_options,
)
from recbole_milk.options import BOOLEAN, NON_NEGATIVE, in_range, one_of, positive_int


def _log_gamma_samples(concentration: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """log of `count` Gamma(concentration, 1) draws, float64.

    Marsaglia & Tsang (2000) for Gamma(concentration + 1), boosted by U^(1 / concentration). Working in log space
    keeps small concentrations (the paper uses 0.01) from underflowing to all-zero Dirichlet draws.
    """
    d = concentration + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    log_gamma = torch.empty(count, dtype=torch.float64)
    pending = torch.arange(count)
    while pending.numel() > 0:  # rejection rounds, not items: each round accepts > 95% of what is pending
        x = torch.randn(pending.numel(), generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        u = torch.rand(pending.numel(), generator=generator, dtype=torch.float64)
        log_v = torch.log(torch.where(v > 0, v, torch.ones_like(v)))
        accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        log_gamma[pending[accepted]] = math.log(d) + log_v[accepted]
        pending = pending[~accepted]
    # 1 - U lies in (0, 1], so its log is finite.
    boost = torch.log1p(-torch.rand(count, generator=generator, dtype=torch.float64)) / concentration
    return log_gamma + boost


def sample_dirichlet(concentration: float, num_draws: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """`num_draws` rows from the symmetric Dirichlet(concentration, ..., concentration) on `dim` components."""
    log_gamma = _log_gamma_samples(concentration, num_draws * dim, generator).view(num_draws, dim)
    return torch.softmax(log_gamma, dim=1).float()


class EnvironmentSampler:
    """Fusion weights of the training environments (paper eqs. 9-12), one row per environment.

    Row 0 is the equal-weight environment (1/M each) when `include_equal_env`. The other M rows come from one
    Dirichlet draw Theta_1 and its cyclic shifts: Theta_m is Theta_{m-1} with its last weight moved to the front,
    so each modality carries the largest weight in exactly one of them. Without `cyclic_shift` they are M
    independent draws. Without `resample` the rows are drawn once, here, and returned on every call.
    Draws come from a private generator seeded with `seed`, so a run's environments depend on the seed alone.
    """

    def __init__(
        self,
        num_modalities: int,
        dirichlet_alpha: float,
        include_equal_env: bool = True,
        cyclic_shift: bool = True,
        resample: bool = True,
        seed: int = 0,
    ):
        if num_modalities < 2:
            raise ValueError(f"EnvironmentSampler needs at least 2 modalities, got {num_modalities}.")
        if not dirichlet_alpha > 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}.")
        self.num_modalities = num_modalities
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.include_equal_env = include_equal_env
        self.cyclic_shift = cyclic_shift
        self.generator = torch.Generator().manual_seed(int(seed))
        self._fixed = None if resample else self._draw()

    @property
    def num_environments(self) -> int:
        return self.num_modalities + int(self.include_equal_env)

    def __call__(self) -> torch.Tensor:
        """Weights of shape (num_environments, num_modalities) on CPU; each row sums to 1."""
        return self._fixed.clone() if self._fixed is not None else self._draw()

    def _draw(self) -> torch.Tensor:
        m = self.num_modalities
        if self.cyclic_shift:
            first = sample_dirichlet(self.dirichlet_alpha, 1, m, self.generator)[0]
            # Row k is `first` rolled right by k places: row_k[i] = first[(i - k) mod M].
            shifts = torch.arange(m).unsqueeze(1)
            weights = first[(torch.arange(m).unsqueeze(0) - shifts) % m]
        else:
            weights = sample_dirichlet(self.dirichlet_alpha, m, m, self.generator)
        if self.include_equal_env:
            weights = torch.cat([torch.full((1, m), 1.0 / m), weights])
        return weights


def alignment_loss(modality_embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
    """Masked cross-modality alignment (paper eq. 6) as an element-wise MSE.

    modality_embeddings: (n, M, D) extractor outputs c_j^m; availability: (n, M) bool.
    Every unordered modality pair (m, m') that item j has both of contributes ||c_j^m - c_j^m'||^2 / D; the loss is
    the mean of these terms over all such (item, pair) terms, and 0 when there is none.
    """
    num_modalities = modality_embeddings.shape[1]
    first, second = torch.triu_indices(num_modalities, num_modalities, offset=1, device=availability.device)
    valid = availability[:, first] & availability[:, second]
    squared = (modality_embeddings[:, first] - modality_embeddings[:, second]).pow(2).mean(dim=-1)
    total = torch.where(valid, squared, torch.zeros_like(squared)).sum()
    return total / valid.sum().clamp(min=1).to(total.dtype)


def combine_environment_losses(env_losses: torch.Tensor, reduction: str, invariance_weight: float) -> torch.Tensor:
    """Invariance objective over per-environment losses (paper eq. 16, without alignment and regulariser).

    mean: mean_e L_e + w * population variance (the paper's formula; both are moments of the uniform distribution
    over environments). sum: sum_e L_e + w * unbiased variance (the authors' code).
    """
    if reduction == "mean":
        return env_losses.mean() + invariance_weight * env_losses.var(correction=0)
    if reduction == "sum":
        return env_losses.sum() + invariance_weight * env_losses.var(correction=1)
    raise ValueError(f"env_loss_reduction must be 'mean' or 'sum', got {reduction!r}.")


class MILK(GeneralRecommender):
    r"""MILK: multimodality invariant learning for new-item recommendation, as a pairwise RecBole model.

    The `dataset` argument provides `modality_names`, `item_features` (float32 (n_items, d_m) per modality,
    missing rows imputed), `item_availability` (bool (n_items, M)) and `imputation_values` ((d_m,) per modality).
    """

    input_type = InputType.PAIRWISE
    min_modalities = 2

    option_rules: Dict[str, Tuple[Callable, str]] = {
        "embedding_size": positive_int(),
        "reg_weight": NON_NEGATIVE,
        "invariance_weight": NON_NEGATIVE,
        "align_weight": NON_NEGATIVE,
        "dirichlet_alpha": in_range(0.0, math.inf, low_open=True, high_open=True),
        "env_loss_reduction": one_of("mean", "sum"),
        "use_alignment": BOOLEAN,
        "use_invariance": BOOLEAN,
        "include_equal_env": BOOLEAN,
        "cyclic_shift": BOOLEAN,
        "resample_envs": BOOLEAN,
        "normalize_features": BOOLEAN,
        "inference_fusion": one_of("imputed", "available"),
        "sparse_user_gradients": BOOLEAN,
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        options = read_options(type(self), config)
        self.embedding_size = options["embedding_size"]
        self.reg_weight = float(options["reg_weight"])
        self.invariance_weight = float(options["invariance_weight"])
        self.align_weight = float(options["align_weight"])
        self.env_loss_reduction = options["env_loss_reduction"]
        self.use_alignment = options["use_alignment"]
        self.use_invariance = options["use_invariance"]
        self.normalize_features = options["normalize_features"]
        self.inference_fusion = options["inference_fusion"]

        features, availability, fills = read_modalities(dataset, self.n_items, "MILK", self.min_modalities)
        self.modality_names = list(dataset.modality_names)
        self.num_modalities = len(features)

        # Sparse: a step updates only the batch's user rows (lazy Adam in the trainer), so epoch time stays linear
        # in interactions as users grow. Dense (the default) is the paper's optimiser.
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size, sparse=options["sparse_user_gradients"])
        self.extractors = nn.ModuleList(nn.Linear(x.shape[1], self.embedding_size) for x in features)
        self.apply(xavier_normal_initialization)
        nn.init.normal_(self.user_embedding.weight, std=0.1)

        # Non-persistent buffers: they follow .to(device) but stay out of checkpoints, which hold weights only.
        self.register_buffer("item_availability", availability, persistent=False)
        for m, fill in enumerate(fills):
            self.register_buffer(f"imputation_value_{m}", fill, persistent=False)
        for m, rows in enumerate(self.prepare_features(features, availability)):
            self.register_buffer(f"item_feature_{m}", rows, persistent=False)

        self.environments = EnvironmentSampler(
            self.num_modalities,
            options["dirichlet_alpha"],
            include_equal_env=options["include_equal_env"],
            cyclic_shift=options["cyclic_shift"],
            resample=options["resample_envs"],
            seed=config["seed"] or 0,
        )
        self._item_cache = ItemRepresentationCache()

    # ----- construction helpers -------------------------------------------------------------------------------

    def _buffers_of(self, prefix: str) -> List[torch.Tensor]:
        return [getattr(self, f"{prefix}_{m}") for m in range(self.num_modalities)]

    # ----- item and user representations (shared by training, evaluation and serving) --------------------------

    def prepare_features(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> List[torch.Tensor]:
        """The extractors' inputs: missing rows replaced by the modality's imputation value, then (if
        normalize_features) every row scaled to unit L2 norm; an all-zero row stays zero."""
        return prepare_modalities(features, availability, self._buffers_of("imputation_value"), self.normalize_features)

    def extract(self, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-modality embeddings c^m of shape (n, M, D) from prepared feature rows."""
        return torch.stack([extractor(rows) for extractor, rows in zip(self.extractors, prepared)], dim=1)

    def fuse(self, modality_embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
        """Inference fusion (paper eq. 18): the mean of all M outputs (`imputed`), or of the available modalities
        only (`available`; an item with none available falls back to all M)."""
        if self.inference_fusion == "imputed":
            return modality_embeddings.mean(dim=1)
        weights = availability.to(modality_embeddings.dtype)
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, torch.ones_like(weights))
        return (modality_embeddings * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True)

    def encode_items(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> torch.Tensor:
        """Item representations (n, D) from raw per-modality feature rows (n, d_m) and availability (n, M).

        Rows of missing modalities may hold anything (zeros, NaN): they are replaced by the imputation value.
        """
        availability = check_item_inputs(features, availability, self.modality_names, self.item_availability.device)
        return self.fuse(self.extract(self.prepare_features(features, availability)), availability)

    def _encode_item_ids(self, items: torch.Tensor) -> torch.Tensor:
        rows = [table[items] for table in self._buffers_of("item_feature")]
        return self.fuse(self.extract(rows), self.item_availability[items])

    def _encode_all_items(self) -> torch.Tensor:
        return self.fuse(self.extract(self._buffers_of("item_feature")), self.item_availability)

    def item_representations(self) -> torch.Tensor:
        """Representations of all items (n_items, D). In eval mode they are computed once and reused until the
        model switches mode, its parameters change (optimizer step, load_state_dict) or it moves device."""
        return self._item_cache.get(self, self._encode_all_items)

    def user_embeddings(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        """User embeddings: all of them (n_users, D), or the rows of `users`."""
        return self.user_embedding.weight if users is None else self.user_embedding(users)

    def random_state(self) -> Dict[str, torch.Tensor]:
        """State of the private environment generator, saved in resume points so a resumed run draws on."""
        return {"environments": self.environments.generator.get_state()}

    def load_random_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.environments.generator.set_state(state["environments"].cpu())

    def train(self, mode: bool = True) -> "MILK":
        if mode:  # training resumes: drop the cached table (eval() keeps it while nothing changed)
            self._item_cache.clear()
        return super().train(mode)

    # ----- RecBole model contract ------------------------------------------------------------------------------

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        users = interaction[self.USER_ID]
        pos_items = interaction[self.ITEM_ID]
        neg_items = interaction[self.NEG_ITEM_ID]
        batch = pos_items.shape[0]

        # Project each distinct item of the batch once, never the whole item table.
        items, inverse = torch.unique(torch.cat([pos_items, neg_items]), return_inverse=True)
        modality_embeddings = self.extract([table[items] for table in self._buffers_of("item_feature")])
        pos_c, neg_c = modality_embeddings[inverse[:batch]], modality_embeddings[inverse[batch:]]
        user_e = self.user_embedding(users)

        # Scores are linear in the fusion weights: score under env e = sum_m w_em <u, c^m>.
        pos_scores = (user_e.unsqueeze(1) * pos_c).sum(dim=-1)
        neg_scores = (user_e.unsqueeze(1) * neg_c).sum(dim=-1)
        if self.use_invariance:
            weights = self.environments().to(device=user_e.device, dtype=user_e.dtype)
        else:
            weights = torch.full((1, self.num_modalities), 1.0 / self.num_modalities, device=user_e.device)
        env_losses = F.softplus((neg_scores - pos_scores) @ weights.t()).mean(dim=0)
        if self.use_invariance:
            loss = combine_environment_losses(env_losses, self.env_loss_reduction, self.invariance_weight)
        else:
            loss = env_losses[0]

        if self.use_alignment:
            positives = torch.unique(inverse[:batch])
            loss = loss + self.align_weight * alignment_loss(
                modality_embeddings[positives], self.item_availability[items[positives]]
            )

        pos_z, neg_z = pos_c.mean(dim=1), neg_c.mean(dim=1)
        reg = (user_e.pow(2).sum(dim=1) + pos_z.pow(2).sum(dim=1) + neg_z.pow(2).sum(dim=1)).mean()
        return loss + self.reg_weight * reg

    def predict(self, interaction: Any) -> torch.Tensor:
        user_e = self.user_embedding(interaction[self.USER_ID])
        return (user_e * self._encode_item_ids(interaction[self.ITEM_ID])).sum(dim=1)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        user_e = self.user_embedding(interaction[self.USER_ID])
        return (user_e @ self.item_representations().t()).view(-1)
