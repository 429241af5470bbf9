"""Shared pieces of the plugin's content-based models.

- `read_options`: the values of a model's `option_rules`, checked, with errors that name the option and model.
- `read_modalities` / `prepare_modalities`: the dataset contract's feature matrices, checked, and the rows a model
  feeds its networks (missing rows imputed, optionally L2-normalised). Training, evaluation and serving all go
  through `prepare_modalities`, so content is normalised identically everywhere.
- `mlp`: feed-forward stacks for content encoders and towers.
- `ItemRepresentationCache`: all-item representations computed once per evaluation.
- `ContentRecommender`: base class of the new-item baselines (DUIF, VBPR, DropoutNet, MTPR, Heater, CLCRec,
  CCFCRec, GAR, GoRec).
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_milk.data.dataset import ROLE_WARM
from recbole_milk.pretrained import CONFIG_KEY as PRETRAINED_CF_KEY
from recbole_milk.pretrained import load_cf_embeddings
from recbole_milk.options import BOOLEAN, ConfigError, one_of

OptionRules = Dict[str, Tuple[Callable, str]]

ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}
ACTIVATION_RULE = one_of(*ACTIVATIONS)
HIDDEN_SIZES_RULE: Tuple[Callable, str] = (
    lambda value: isinstance(value, list)
    and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value),
    "a list of positive integers (hidden layer sizes; [] for a single affine layer)",
)


def read_options(model_class: type, config: Any) -> Dict[str, Any]:
    """The values of `model_class.option_rules` in `config`, each checked against its rule."""
    name = model_class.__name__
    options = {}
    for key, (check, allowed) in model_class.option_rules.items():
        value = config[key]
        if value is None:
            raise ConfigError(
                f"Option '{key}' is not set for model {name}: it must be {allowed}. recbole_milk.config.Config "
                f"loads the defaults in properties/model/{name}.yaml."
            )
        if not check(value):
            raise ConfigError(f"Option '{key}' = {value!r} is invalid for model {name}: it must be {allowed}.")
        options[key] = value
    return options


def read_modalities(
    dataset: Any, n_items: int, owner: str, min_modalities: int = 1
) -> Tuple[List[torch.Tensor], torch.Tensor, List[torch.Tensor]]:
    """(features, availability, imputation values) of the dataset contract, as float32 / bool tensors, checked."""
    features = [torch.as_tensor(x, dtype=torch.float32) for x in dataset.item_features]
    names = list(getattr(dataset, "modality_names", []))
    if len(features) < min_modalities:
        raise ValueError(
            f"{owner} needs at least {min_modalities} modalities, but the dataset has {len(features)} ({names}); "
            "list the feature files under the 'modalities' option."
        )
    availability = torch.as_tensor(dataset.item_availability).bool()
    fills = [torch.as_tensor(v, dtype=torch.float32) for v in dataset.imputation_values]
    if availability.shape != (n_items, len(features)) or len(fills) != len(features) or len(names) != len(features):
        raise ValueError(
            f"{owner} got inconsistent modality data: {len(features)} feature matrices, {len(names)} names, "
            f"{len(fills)} imputation vectors and availability of shape {tuple(availability.shape)}; expected one "
            f"of each per modality and availability of shape ({n_items}, {len(features)})."
        )
    for name, x, fill in zip(names, features, fills):
        if x.dim() != 2 or x.shape[0] != n_items or fill.shape != (x.shape[1],):
            raise ValueError(
                f"{owner}: modality '{name}' has features of shape {tuple(x.shape)} and an imputation vector of "
                f"shape {tuple(fill.shape)}; expected ({n_items}, d) rows by internal item id and (d,)."
            )
    return features, availability, fills


def prepare_modalities(
    features: Sequence[torch.Tensor], availability: torch.Tensor, fills: Sequence[torch.Tensor], normalize: bool
) -> List[torch.Tensor]:
    """Per modality, the rows a model consumes: missing rows replaced by the modality's imputation value, then (if
    `normalize`) every row scaled to unit L2 norm; an all-zero row stays zero. Rows of missing modalities may hold
    anything (zeros, NaN) on input."""
    prepared = []
    for m, (rows, fill) in enumerate(zip(features, fills)):
        rows = rows.to(device=fill.device, dtype=torch.float32)
        rows = torch.where(availability[:, m : m + 1].to(fill.device), rows, fill)
        # In float64: the float32 norm of a row with entries above ~1e19 overflows and zeroes the whole row.
        prepared.append(F.normalize(rows.double(), dim=1).float() if normalize else rows)
    return prepared


def check_item_inputs(features: Sequence[torch.Tensor], availability: torch.Tensor, modality_names: Sequence[str],
                      device: torch.device) -> torch.Tensor:
    """Check freshly uploaded items' raw rows (n, d_m) per modality against availability (n, M); the availability
    as a bool tensor on `device`."""
    count = len(modality_names)
    if len(features) != count or availability.shape != (features[0].shape[0], count):
        raise ValueError(
            f"encode_items expects {count} feature matrices ({list(modality_names)}) with the same number of rows "
            f"and availability of shape (rows, {count}); got {len(features)} matrices and availability of shape "
            f"{tuple(availability.shape)}."
        )
    return availability.to(device).bool()


def mlp(input_size: int, hidden_sizes: Sequence[int], output_size: int, activation: str) -> nn.Sequential:
    """Affine layers input -> hidden_sizes... -> output with `activation` between them (none after the last)."""
    sizes = [input_size, *hidden_sizes, output_size]
    layers: List[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(size_in, size_out))
    return nn.Sequential(*layers)


def batch_items(pos_items: torch.Tensor, neg_items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distinct items, index of each positive in them, index of each negative): a training batch projects each
    distinct item once, never the whole item table."""
    items, inverse = torch.unique(torch.cat([pos_items, neg_items]), return_inverse=True)
    return items, inverse[: pos_items.shape[0]], inverse[pos_items.shape[0] :]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Batch mean of -log sigmoid(pos - neg), computed stably."""
    return F.softplus(neg_scores - pos_scores).mean()


def squared_norm(*tensors: torch.Tensor) -> torch.Tensor:
    """Batch mean of the summed squared row norms of `tensors` (each (batch, d)): an embedding regulariser."""
    return sum(t.pow(2).sum(dim=1) for t in tensors).mean()


class ItemRepresentationCache:
    """Holds a model's all-item representations between evaluation batches.

    In training mode nothing is cached. In eval mode the value is recomputed only when a parameter or buffer has
    changed in place (optimizer step, load_state_dict: both bump the tensor's version counter) or moved (device).
    """

    def __init__(self) -> None:
        self._value: Optional[torch.Tensor] = None
        self._key: Optional[tuple] = None

    def get(self, module: nn.Module, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if module.training:
            return compute()
        tensors = list(module.parameters()) + list(module.buffers())
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._value is None or self._key != key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._value = None
        self._key = None


class ContentRecommender(GeneralRecommender):
    """Base of the plugin's content baselines. A score is the inner product of a user and an item representation.

    Holds, as non-persistent buffers (they follow .to(device) but stay out of checkpoints):
      item_content  float32 (n_items, sum d_m): the M prepared modality rows concatenated, the input of every
                    baseline's content encoder;
      item_availability, imputation_value_<m>: to prepare rows of freshly uploaded items the same way;
      warm_items    bool (n_items,): items whose interactions training may see. Only these may use ID factors or
                    pre-trained CF rows; every other item is scored from its content alone.

    Subclasses build their networks and implement `user_representations`, `represent_items` and `calculate_loss`.
    """

    input_type = InputType.PAIRWISE
    option_rules: OptionRules = {"normalize_features": BOOLEAN}

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        name = type(self).__name__
        self.options = read_options(type(self), config)
        features, availability, fills = read_modalities(dataset, self.n_items, name)
        self.modality_names = list(dataset.modality_names)
        self.num_modalities = len(features)
        self.normalize_features = bool(self.options["normalize_features"])
        self.content_size = sum(x.shape[1] for x in features)

        self.register_buffer("item_availability", availability, persistent=False)
        for m, fill in enumerate(fills):
            self.register_buffer(f"imputation_value_{m}", fill, persistent=False)
        self.register_buffer("item_content", self.prepare_content(features, availability), persistent=False)
        role = torch.as_tensor(dataset.item_role).long()
        if role.shape != (self.n_items,):
            raise ValueError(f"{name}: dataset.item_role has shape {tuple(role.shape)}, expected ({self.n_items},).")
        self.register_buffer("warm_items", role == ROLE_WARM, persistent=False)
        self._item_cache = ItemRepresentationCache()

    # ----- content ---------------------------------------------------------------------------------------------

    def prepare_content(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> torch.Tensor:
        """Concatenated prepared modality rows (n, sum d_m) from raw rows (n, d_m) per modality and availability."""
        fills = [getattr(self, f"imputation_value_{m}") for m in range(self.num_modalities)]
        return torch.cat(prepare_modalities(features, availability, fills, self.normalize_features), dim=1)

    # ----- representations (subclasses) ------------------------------------------------------------------------

    def user_representations(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        """User representations: all of them (n_users, D), or the rows of `users`."""
        raise NotImplementedError

    def represent_items(self, content: torch.Tensor, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Item representations (n, D) from prepared content rows (n, sum d_m).

        `items` are the rows' internal ids: warm ones may add what training learned about them (ID factors,
        pre-trained CF rows). Without `items` every row is a new item, represented from its content alone.
        """
        raise NotImplementedError

    # ----- shared inference ------------------------------------------------------------------------------------

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

    def item_representations(self) -> torch.Tensor:
        """Representations of all items (n_items, D), cached in eval mode (see ItemRepresentationCache)."""
        all_items = torch.arange(self.n_items, device=self.item_content.device)
        return self._item_cache.get(self, lambda: self.represent_items(self.item_content, all_items))

    def register_frozen_cf(self, dataset: Any) -> int:
        """Load the pre-trained warm CF embeddings named by `pretrained_cf_dir` as buffers `user_cf` / `item_cf`
        (buffers, not parameters: they stay fixed; rows of non-warm items zeroed) and return their size."""
        user_cf, item_cf = load_cf_embeddings(self.options[PRETRAINED_CF_KEY], dataset)
        self.register_buffer("user_cf", user_cf, persistent=False)
        self.register_buffer("item_cf", item_cf * self.warm_items.unsqueeze(1).to(item_cf.dtype), persistent=False)
        return user_cf.shape[1]

    def encode_items(self, features: Sequence[torch.Tensor], availability: torch.Tensor) -> torch.Tensor:
        """Representations of freshly uploaded items from raw per-modality rows (n, d_m) and availability (n, M);
        rows of missing modalities may hold anything. They are new items: content only."""
        availability = check_item_inputs(features, availability, self.modality_names, self.item_availability.device)
        return self.represent_items(self.prepare_content(features, availability))

    def user_embeddings(self, users: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Alias of user_representations, the name MILK's serving path uses."""
        return self.user_representations(users)

    def train(self, mode: bool = True) -> "ContentRecommender":
        if mode:  # training resumes: drop the cached table (eval() keeps it while nothing changed)
            self._item_cache.clear()
        return super().train(mode)

    def predict(self, interaction: Any) -> torch.Tensor:
        items = interaction[self.ITEM_ID]
        users = self.user_representations(interaction[self.USER_ID])
        return (users * self.represent_items(self.item_content[items], items)).sum(dim=1)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        users = self.user_representations(interaction[self.USER_ID])
        return (users @ self.item_representations().t()).view(-1)
