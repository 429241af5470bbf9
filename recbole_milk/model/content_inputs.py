"""Item content as the plugin's models consume it: the dataset contract's matrices, checked and prepared.

Training, evaluation and serving all go through `prepare_modalities`, so content is imputed and normalised the same
way everywhere. `hide_modalities` draws the masks of missing-aware training.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from recbole_milk.errors import ConfigError, DataError


NORMALIZE_ROWS = 65536  # rows normalised at a time


@dataclass
class ItemContent:
    """Prepared feature rows of n items, one (n, d_m) tensor per modality, and their availability (n, M)."""

    rows: List[torch.Tensor]
    availability: torch.Tensor

    def concatenated(self) -> torch.Tensor:
        """(n, sum d_m): the modalities side by side, the input of the concatenating content encoders."""
        return torch.cat(self.rows, dim=1)


def read_options(model_class: type, config: Any) -> Dict[str, Any]:
    """The values of `model_class.option_rules` in `config`. Values are validated once, by the Config
    (recbole_milk.options.validate_options); this only reports an option whose default was never loaded."""
    options = {}
    for key, (check, allowed) in model_class.option_rules.items():
        value = config[key]
        if value is None and not check(None):
            # The most basic class that declares the option owns its default (ContentRecommender.yaml, ...).
            owner = next(cls for cls in reversed(model_class.__mro__) if key in getattr(cls, "option_rules", {}))
            raise ConfigError(
                f"Option '{key}' is not set for model {model_class.__name__}: it must be {allowed}. "
                f"recbole_milk.config.Config loads its default from properties/model/{owner.__name__}.yaml.")
        options[key] = value
    return options


def read_modalities(dataset: Any, n_items: int, owner: str,
                    min_modalities: int = 1) -> Tuple[List[torch.Tensor], torch.Tensor, List[torch.Tensor]]:
    """(features, availability, imputation values) of the dataset contract, as float32 / bool tensors, checked."""
    features = [torch.as_tensor(x, dtype=torch.float32) for x in dataset.item_features]
    names = list(getattr(dataset, "modality_names", []))
    if len(features) < min_modalities:
        raise DataError(
            f"{owner} needs at least {min_modalities} modalities, but the dataset has {len(features)} ({names}); "
            "list the feature files under the 'modalities' option.")
    availability = torch.as_tensor(dataset.item_availability).bool()
    fills = [torch.as_tensor(v, dtype=torch.float32) for v in dataset.imputation_values]
    if availability.shape != (n_items, len(features)) or len(fills) != len(features) or len(names) != len(features):
        raise DataError(
            f"{owner} got inconsistent modality data: {len(features)} feature matrices, {len(names)} names, "
            f"{len(fills)} imputation vectors and availability of shape {tuple(availability.shape)}; expected one "
            f"of each per modality and availability of shape ({n_items}, {len(features)}).")
    for name, x, fill in zip(names, features, fills):
        if x.dim() != 2 or x.shape[0] != n_items or fill.shape != (x.shape[1],):
            raise DataError(
                f"{owner}: modality '{name}' has features of shape {tuple(x.shape)} and an imputation vector of "
                f"shape {tuple(fill.shape)}; expected ({n_items}, d) rows by internal item id and (d,).")
    return features, availability, fills


def prepare_modalities(features: Sequence[torch.Tensor], availability: torch.Tensor,
                       fills: Sequence[torch.Tensor], normalize: bool) -> List[torch.Tensor]:
    """Per modality, the rows a model consumes: missing rows replaced by the modality's imputation value, then (if
    `normalize`) every row scaled to unit L2 norm; an all-zero row stays zero. Rows of missing modalities may hold
    anything (zeros, NaN) on input."""
    prepared = []
    for m, (rows, fill) in enumerate(zip(features, fills)):
        rows = rows.to(device=fill.device, dtype=torch.float32)
        rows = torch.where(availability[:, m: m + 1].to(fill.device), rows, fill)
        if normalize:
            # In float64: the float32 norm of a row with entries above ~1e19 overflows and zeroes the whole row.
            # By row blocks, so the float64 copy never holds more than one block.
            for start in range(0, rows.shape[0], NORMALIZE_ROWS):
                block = rows[start:start + NORMALIZE_ROWS]
                block.copy_(F.normalize(block.double(), dim=1))
        prepared.append(rows)
    return prepared


def check_item_inputs(features: Sequence[torch.Tensor], availability: torch.Tensor, modality_names: Sequence[str],
                      device: torch.device) -> torch.Tensor:
    """Check freshly uploaded items' raw rows (n, d_m) per modality against availability (n, M); the availability
    as a bool tensor on `device`."""
    count = len(modality_names)
    if len(features) != count or availability.shape != (features[0].shape[0], count):
        raise DataError(
            f"encode_items expects {count} feature matrices ({list(modality_names)}) with the same number of rows "
            f"and availability of shape (rows, {count}); got {len(features)} matrices and availability of shape "
            f"{tuple(availability.shape)}.")
    return availability.to(device).bool()


def missing_pattern(availability: torch.Tensor) -> torch.Tensor:
    """Missing-modality pattern of each item as an integer: bit m is set when modality m is missing (0: complete)."""
    bits = 2 ** torch.arange(availability.shape[1], device=availability.device)
    return ((~availability).long() * bits).sum(dim=1)


def hide_modalities(availability: torch.Tensor, rate: float) -> torch.Tensor:
    """Availability after hiding modalities at random, as missing-aware training does.

    Each item that has at least two modalities is affected with probability `rate`; an affected item with a
    available modalities loses k of them, k uniform in 1..a-1, so it always keeps one. Draws use torch's global
    generator (seeded per run, and saved in resume points).
    """
    n, m = availability.shape
    available = availability.sum(dim=1)
    affected = (torch.rand(n, device=availability.device) < rate) & (available >= 2)
    spare = (available - 1).clamp(min=1).to(torch.float32)
    count = (torch.rand(n, device=availability.device) * spare).floor().long() + 1
    # Rank the available modalities in random order; the `count` lowest-ranked ones are hidden.
    order = torch.rand(n, m, device=availability.device).masked_fill(~availability, 2.0)
    ranks = order.argsort(dim=1).argsort(dim=1)
    hidden = affected.unsqueeze(1) & availability & (ranks < count.unsqueeze(1))
    return availability & ~hidden
