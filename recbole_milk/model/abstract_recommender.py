"""The bases of the plugin's models, in RecBole's home for them.

- `ContentRecommender`: a model that scores an item from its multimodal content. MILK and every new-item baseline
  are one. It holds the content (prepared per modality, gathered by item id), the availability masks and the
  warm-item mask; it hides modalities in training batches (missing-aware training, option `modality_dropout`);
  it applies per-pattern score calibration (option `score_calibration`, fitted by recbole_milk.calibration); it
  caches the all-item table between evaluation batches; and it serves fresh items (encode_items), so every
  content model is servable.
- `TwoStageRecommender`: a content model trained on top of frozen pre-trained warm CF embeddings (DropoutNet,
  Heater, GAR, GoRec). It owns the frozen rows, the "CF row if warm, generated otherwise" choice and the regression
  onto CF scores.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_milk.data.roles import ROLE_WARM
from recbole_milk.errors import ConfigError, DataError
from recbole_milk.model.content_inputs import (
    ItemContent,
    check_item_inputs,
    hide_modalities,
    missing_pattern,
    prepare_modalities,
    read_modalities,
    read_options,
)
from recbole_milk.options import (
    BOOLEAN,
    RATIO,
    SHARE,
    OptionRules,
    existing_folder_or_none,
    one_of,
    positive_int,
)


def batch_items(pos_items: torch.Tensor, neg_items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distinct items, index of each positive in them, index of each negative): a training batch projects each
    distinct item once, never the whole item table."""
    items, inverse = torch.unique(torch.cat([pos_items, neg_items]), return_inverse=True)
    return items, inverse[: pos_items.shape[0]], inverse[pos_items.shape[0]:]


class ItemRepresentationCache:
    """Holds a model's all-item representations between evaluation batches.

    In training mode nothing is cached. In eval mode the value is recomputed only when a parameter or buffer has
    changed in place (optimizer step, load_state_dict: both bump the tensor's version counter) or moved (device).
    """

    def __init__(self) -> None:
        self._value: Optional[torch.Tensor] = None
        self._key: Optional[tuple] = None

    def get(self, module: nn.Module, compute: Callable[[], torch.Tensor], extra_key: tuple = ()) -> torch.Tensor:
        """compute(), or the value kept from the last call with the same parameters, buffers and `extra_key`."""
        if module.training:
            return compute()
        tensors = list(module.parameters()) + list(module.buffers())
        key = tuple((t.data_ptr(), t._version) for t in tensors) + tuple(extra_key)
        if self._value is None or self._key != key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._value = None
        self._key = None


class ContentRecommender(GeneralRecommender):
    """Base of the plugin's content models. A score is the inner product of a user and an item embedding.

    Non-persistent buffers (they follow .to(device) but stay out of checkpoints):
      item_feature_<m>   float32 (n_items, d_m): modality m's prepared rows (missing rows imputed, normalised);
      item_availability  bool (n_items, M); item_pattern: its missing pattern as an integer (0 = complete);
      imputation_value_<m>, prepared_fill_<m>: the raw and the prepared fill of a missing row;
      warm_items         bool (n_items,): items whose interactions training may see. Only these may use ID
                         factors or pre-trained CF rows; every other item is scored from its content alone.
    With `score_calibration: pattern` the persistent buffers calibration_scale / calibration_shift (one entry per
    missing pattern) turn a score s of an item with pattern p into scale_p * s + shift_p.

    Subclasses build their networks and implement `user_representations`, `represent_items` and `calculate_loss`.
    """

    input_type = InputType.PAIRWISE
    servable = True  # rebuilt from an artefact and scores fresh items (recbole_milk.inference)
    min_modalities = 1
    option_rules: OptionRules = {
        "normalize_features": BOOLEAN,
        "modality_dropout": RATIO,
        "score_calibration": one_of("none", "pattern"),
        "calibration_min_pattern_ratio": SHARE,
    }

    @classmethod
    def check_options(cls, config: Dict[str, Any]) -> None:
        floor = config.get("calibration_min_pattern_ratio")
        if floor and config.get("score_calibration") != "pattern":
            raise ConfigError(f"Option 'calibration_min_pattern_ratio' = {floor!r} needs score_calibration: pattern: "
                              "the floor is met by shifting the calibrated scores per missing pattern. Set "
                              "score_calibration: pattern, or calibration_min_pattern_ratio: 0.")

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        name = type(self).__name__
        self.options = read_options(type(self), config)
        features, availability, fills = read_modalities(dataset, self.n_items, name, self.min_modalities)
        self.modality_names = list(dataset.modality_names)
        self.num_modalities = len(features)
        self.modality_sizes = [x.shape[1] for x in features]
        self.content_size = sum(self.modality_sizes)
        self.normalize_features = bool(self.options["normalize_features"])
        self.modality_dropout = float(self.options["modality_dropout"])
        self.calibrated = self.options["score_calibration"] == "pattern"

        self.register_buffer("item_availability", availability, persistent=False)
        self.register_buffer("item_pattern", missing_pattern(availability), persistent=False)
        for m, fill in enumerate(fills):
            self.register_buffer(f"imputation_value_{m}", fill, persistent=False)
        for m, rows in enumerate(self._prepare(features, availability)):
            self.register_buffer(f"item_feature_{m}", rows, persistent=False)
        nothing = torch.zeros(1, self.num_modalities, dtype=torch.bool)
        for m, fill in enumerate(self._prepare([f.unsqueeze(0) for f in fills], nothing)):
            self.register_buffer(f"prepared_fill_{m}", fill[0], persistent=False)
        role = torch.as_tensor(dataset.item_role).long()
        if role.shape != (self.n_items,):
            raise DataError(f"{name}: dataset.item_role has shape {tuple(role.shape)}, expected ({self.n_items},).")
        self.register_buffer("warm_items", role == ROLE_WARM, persistent=False)
        if self.calibrated:
            self.register_buffer("calibration_scale", torch.ones(2 ** self.num_modalities))
            self.register_buffer("calibration_shift", torch.zeros(2 ** self.num_modalities))
        self._item_cache = ItemRepresentationCache()
        self._candidate_cache = ItemRepresentationCache()
        self._candidate_source: Optional[torch.Tensor] = None

    # ----- content ---------------------------------------------------------------------------------------------

    def _tables(self, prefix: str) -> List[torch.Tensor]:
        return [getattr(self, f"{prefix}_{m}") for m in range(self.num_modalities)]

    def _prepare(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> List[torch.Tensor]:
        fills = [getattr(self, f"imputation_value_{m}") for m in range(self.num_modalities)]
        return prepare_modalities(features, availability, fills, self.normalize_features)

    def item_content(self, items: Optional[torch.Tensor] = None) -> ItemContent:
        """Prepared content of `items` (internal ids), or of every item."""
        if items is None:
            return ItemContent(self._tables("item_feature"), self.item_availability)
        items = torch.as_tensor(items, dtype=torch.long, device=self.item_availability.device)
        return ItemContent([table.index_select(0, items) for table in self._tables("item_feature")],
                           self.item_availability.index_select(0, items))

    def training_content(self, items: torch.Tensor) -> ItemContent:
        """item_content(items), with modalities hidden at rate `modality_dropout` in training mode: a hidden
        modality's row becomes the prepared fill, exactly what a new item missing it gets at test time."""
        content = self.item_content(items)
        if not self.training or self.modality_dropout <= 0:
            return content
        availability = hide_modalities(content.availability, self.modality_dropout)
        hidden = content.availability & ~availability
        fills = self._tables("prepared_fill")
        rows = [torch.where(hidden[:, m: m + 1], fill, part) for m, (part, fill) in enumerate(zip(content.rows, fills))]
        return ItemContent(rows, availability)

    def prepare_content(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> ItemContent:
        """Prepared content of fresh items from raw rows (n, d_m) per modality and availability (n, M)."""
        availability = check_item_inputs(features, availability, self.modality_names, self.item_availability.device)
        return ItemContent(self._prepare(features, availability), availability)

    # ----- representations (subclasses) ------------------------------------------------------------------------

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        """User representations: all of them (n_users, D), or the rows of `users`."""
        raise NotImplementedError

    def represent_items(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Item representations (n, D) from prepared content.

        `items` are the rows' internal ids: warm ones may add what training learned about them (ID factors,
        pre-trained CF rows). Without `items` every row is a new item, represented from its content alone.
        """
        raise NotImplementedError

    def id_or_content(self, id_embedding: nn.Embedding, encoded: torch.Tensor,
                      items: Optional[torch.Tensor]) -> torch.Tensor:
        """`encoded` content representations, with the rows of warm `items` replaced by their ID embedding; all
        content when `items` is None (new items)."""
        if items is None:
            return encoded
        return torch.where(self.warm_items[items].unsqueeze(1), id_embedding(items), encoded)

    def _warm_mask(self, items: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(n, 1) 1.0 for warm items, 0.0 for the others, in the dtype of `like`."""
        return self.warm_items[items].unsqueeze(1).to(like.dtype)

    # ----- scoring: embeddings whose inner product is the (calibrated) score -----------------------------------

    def user_embeddings(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        """User side of the score: all users (n_users, D'), or the rows of `users`."""
        users_r = self.user_representations(users)
        if not self.calibrated:
            return users_r
        return torch.cat([users_r, torch.ones_like(users_r[:, :1])], dim=1)

    def item_embeddings(self, content: ItemContent, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Item side of the score: [scale_p * z; shift_p] under calibration, else the representation z."""
        represented = self.represent_items(content, items)
        if not self.calibrated:
            return represented
        pattern = missing_pattern(content.availability)
        scale = self.calibration_scale[pattern].unsqueeze(1).to(represented.dtype)
        shift = self.calibration_shift[pattern].unsqueeze(1).to(represented.dtype)
        return torch.cat([represented * scale, shift], dim=1)

    def set_calibration(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Per-pattern calibration (entry p for missing pattern p), fitted on the validation split."""
        with torch.no_grad():
            self.calibration_scale.copy_(scale)
            self.calibration_shift.copy_(shift)

    def reset_calibration(self) -> None:
        """Back to the identity: every pattern's scores as the model gives them."""
        self.set_calibration(torch.ones_like(self.calibration_scale), torch.zeros_like(self.calibration_shift))

    def item_representations(self) -> torch.Tensor:
        """Item embeddings of all items (n_items, D'), cached in eval mode (see ItemRepresentationCache)."""
        all_items = torch.arange(self.n_items, device=self.item_availability.device)
        return self._item_cache.get(self, lambda: self.item_embeddings(self.item_content(all_items), all_items))

    def encode_items(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> torch.Tensor:
        """Item embeddings of freshly uploaded items from raw per-modality rows (n, d_m) and availability (n, M);
        rows of missing modalities may hold anything. They are new items: content only."""
        return self.item_embeddings(self.prepare_content(features, availability))

    def train(self, mode: bool = True) -> "ContentRecommender":
        if mode:  # training resumes: drop the cached tables (eval() keeps them while nothing changed)
            self._item_cache.clear()
            self._candidate_cache.clear()
        return super().train(mode)

    def predict(self, interaction: Any) -> torch.Tensor:
        items = interaction[self.ITEM_ID]
        users = self.user_embeddings(interaction[self.USER_ID])
        return (users * self.item_embeddings(self.item_content(items), items)).sum(dim=1)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        users = self.user_embeddings(interaction[self.USER_ID])
        return (users @ self.item_representations().t()).view(-1)

    def candidate_scores(self, interaction: Any, candidates: torch.Tensor) -> torch.Tensor:
        """Scores (users x len(candidates)) of the interaction's users for the `candidates` item ids only; the
        trainer ranks new items this way, so evaluation costs candidates, not the whole catalogue."""
        users = self.user_embeddings(interaction[self.USER_ID])
        # Keyed on the candidates object itself, kept here: a freed tensor's address could come back holding other
        # candidates, an object that is still referenced cannot.
        if candidates is not self._candidate_source:
            self._candidate_cache.clear()
            self._candidate_source = candidates
        table = self._candidate_cache.get(self, lambda: self.item_representations().index_select(0, candidates),
                                          extra_key=(candidates._version,))
        return users @ table.t()


class TwoStageRecommender(ContentRecommender):
    """Base of the content models that build on frozen pre-trained warm CF embeddings U (users) and V (items).

    The embeddings arrive on the dataset as `dataset.pretrained_cf` = (user matrix, item matrix) by internal id
    (recbole_milk.pretrained attaches them, from `pretrained_cf_dir` or from its own stage 1). They are kept as
    buffers `user_cf` / `item_cf`, never trained, with the rows of non-warm items zeroed: a new item has no CF
    representation, only what the model generates from its content.
    """

    option_rules: OptionRules = {
        **ContentRecommender.option_rules,
        "pretrained_cf_dir": existing_folder_or_none(),
        "pretrain_epochs": positive_int(),
        "pretrain_embedding_size": positive_int(),
    }

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        cf = getattr(dataset, "pretrained_cf", None)
        if cf is None:
            raise DataError(
                f"{type(self).__name__} trains on pre-trained warm CF embeddings, but its dataset carries none "
                "(dataset.pretrained_cf). run_recbole_milk attaches them; from Python, call "
                "recbole_milk.pretrained.attach_pretrained_cf(dataset, folder) before building the model.")
        user_cf, item_cf = (torch.as_tensor(matrix, dtype=torch.float32) for matrix in cf)
        if user_cf.shape[0] != self.n_users or item_cf.shape[0] != self.n_items or user_cf.shape[1] != item_cf.shape[1]:
            raise DataError(f"{type(self).__name__}: pre-trained CF embeddings of shapes {tuple(user_cf.shape)} and "
                            f"{tuple(item_cf.shape)} do not fit {self.n_users} users and {self.n_items} items.")
        self.register_buffer("user_cf", user_cf, persistent=False)
        self.register_buffer("item_cf", item_cf * self.warm_items.unsqueeze(1).to(item_cf.dtype), persistent=False)
        self.cf_size = user_cf.shape[1]

    def warm_or_generated(self, generated: torch.Tensor, items: Optional[torch.Tensor]) -> torch.Tensor:
        """The CF rows of warm `items`, `generated` rows for every other item (all generated when items is None)."""
        if items is None:
            return generated
        return torch.where(self.warm_items[items].unsqueeze(1), self.item_cf[items], generated)

    def cf_regression_loss(self, users_r: torch.Tensor, pos_r: torch.Tensor, neg_r: torch.Tensor,
                           users: torch.Tensor, pos_cf: torch.Tensor, neg_cf: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the model's scores of the (user, pos) and (user, neg) pairs to the pre-trained
        scores U_u^T V_v (DropoutNet's objective, which Heater keeps)."""
        user_cf = self.user_cf[users]
        predicted = torch.cat([(users_r * pos_r).sum(dim=1), (users_r * neg_r).sum(dim=1)])
        target = torch.cat([(user_cf * pos_cf).sum(dim=1), (user_cf * neg_cf).sum(dim=1)])
        return (predicted - target).pow(2).mean()

    def serving_tensors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """What an artefact must carry besides the state dict: the frozen CF rows."""
        return self.user_cf.detach().cpu(), self.item_cf.detach().cpu()
