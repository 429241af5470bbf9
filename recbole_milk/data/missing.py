"""Missing-modality simulation and imputation statistics.

One source of truth for: which items lose which modality (seeded, per missing_setting), how a
reference missing file is read and written, and the fill value of every missing row (computed from
available rows of warm items only, so new items never leak into training statistics).
"""
import json
import math
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_milk.atomic import write_json
from recbole_milk.errors import DataError
from recbole_milk.options import ITEM_GROUPINGS

# (test_missing_ratio, train_missing_ratio) per setting, paper section 5.1: FT/MT = full/missing train/test.
SETTING_RATIOS: Dict[str, Tuple[float, float]] = {
    "FTFT": (0.0, 0.0),
    "FTMT": (0.5, 0.0),
    "MTMT": (0.5, 0.3),
}


def derived_rng(seed: int, stream: str) -> np.random.Generator:
    """A generator for one named purpose, so that e.g. changing the train masks never moves the split."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8"))])


def missing_ratios(setting: str, test_ratio: Optional[float] = None,
                   train_ratio: Optional[float] = None) -> Tuple[float, float]:
    """(test, train) share of items that miss at least one modality; explicit ratios override the setting."""
    default_test, default_train = SETTING_RATIOS[setting]
    return (default_test if test_ratio is None else float(test_ratio),
            default_train if train_ratio is None else float(train_ratio))


def _apportion(total: int, probs: Sequence[float]) -> np.ndarray:
    """Split `total` into integer counts proportional to `probs` (largest remainder), summing to `total`."""
    exact = np.asarray(probs, dtype=np.float64) * total
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    short = total - int(counts.sum())
    counts[np.argsort(-remainder, kind="stable")[:short]] += 1
    return counts


def simulate_missing(n_items: int, n_modalities: int, ratio: float, rng: np.random.Generator,
                     count_probs: Optional[Sequence[float]] = None) -> np.ndarray:
    """Bool (n_items, n_modalities), True where a modality is dropped.

    round(ratio * n_items) items are affected; of those, a share count_probs[k] miss exactly k + 1 modalities
    (counts apportioned exactly, so 10/45/45 means exactly that); which modalities is uniform at random.
    Masks of one generator state are nested across ratios: the items affected at a lower ratio are affected at a
    higher one too, and an item misses the same modality at every ratio (when each item misses one, the default),
    so a missing-ratio curve measures the ratio, not which items happened to be drawn.
    """
    missing = np.zeros((n_items, n_modalities), dtype=bool)
    if n_items == 0 or n_modalities == 0 or ratio <= 0:
        return missing
    probs = [1.0] if count_probs is None else list(count_probs)
    n_affected = int(math.floor(ratio * n_items + 0.5))
    # Drawn for every item, before anything that depends on the ratio: the order in which items become affected
    # and each item's random order of modalities (the `count` lowest-ranked ones go missing).
    order = rng.permutation(n_items)
    ranks = np.argsort(np.argsort(rng.random((n_items, n_modalities)), axis=1), axis=1)
    affected = order[:n_affected]
    counts = rng.permutation(np.repeat(np.arange(1, len(probs) + 1), _apportion(n_affected, probs)))
    missing[affected] = ranks[affected] < counts[:, None]
    return missing


def read_missing_file(path: str, modality_names: Sequence[str]) -> Dict[str, Dict[str, List[int]]]:
    """Parse a reference missing file into {"test_missing"|"train_missing": {item token: [modality index]}}.

    Format: {"test_missing": {token: name or [names]}, "train_missing": {...}}; either part may be absent.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"missing_file '{path}' cannot be read as JSON ({error}); it must look like "
                         '{"test_missing": {"<item token>": "<modality>"}, "train_missing": {...}}.') from error
    index = {name: m for m, name in enumerate(modality_names)}
    parsed: Dict[str, Dict[str, List[int]]] = {}
    for part in ("test_missing", "train_missing"):
        entries = content.get(part) or {}
        if not isinstance(entries, dict):
            raise DataError(f"missing_file '{path}': '{part}' must map item tokens to modality names.")
        parsed[part] = {}
        for token, names in entries.items():
            names = [names] if isinstance(names, str) else list(names)
            unknown = [name for name in names if name not in index]
            if unknown:
                raise DataError(f"missing_file '{path}': item {token} misses modality {unknown[0]!r}, which is not "
                                 f"in 'modalities' ({list(modality_names)}); use the names of 'modalities'.")
            parsed[part][str(token)] = sorted(index[name] for name in names)
    return parsed


def write_missing_file(path: str, modality_names: Sequence[str], parts: Dict[str, Dict[str, np.ndarray]]) -> None:
    """Write {"modalities": [...], part: {token: [names]}} atomically; `parts` maps part -> token -> bool row."""
    content = {"modalities": list(modality_names)}
    for part, rows in parts.items():
        content[part] = {token: [modality_names[m] for m in np.flatnonzero(row)] for token, row in rows.items()}
    write_json(path, content)


def imputation_value(features: torch.Tensor, available: torch.Tensor, warm: torch.Tensor, method: str,
                     modality: str) -> torch.Tensor:
    """Fill value (d,) float32 of one modality: mean over available rows of warm items, or zeros."""
    if method == "zero":
        return torch.zeros(features.shape[1], dtype=torch.float32)
    rows = available & warm
    if not bool(rows.any()):
        raise DataError(f"Modality '{modality}' is missing for every warm item, so mean imputation has nothing to "
                         "average; lower train_missing_ratio, or set imputation: zero.")
    # Accumulate in float64: features may have been float16 on disk, whose sums overflow.
    return features[rows].double().mean(dim=0).float()


def impute(features: torch.Tensor, available: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """`features` with the rows without the modality set to `fill`, in place (at a million items a copy is
    gigabytes); returns `features`."""
    features[~available] = fill
    return features


def missing_groups(availability: torch.Tensor, modality_names: Sequence[str],
                   by: str = "count") -> Tuple[torch.Tensor, List[str]]:
    """(group of each item (item_num,), group names) of the evaluation's per-group metrics; row 0 (PAD) in group 0.

    count: by how many modalities an item misses (complete, missing_1, missing_2, ...). pattern: by which ones
    (complete, missing_visual, missing_visual+acoustic, ...; group p has bit m set when modality m is missing).
    """
    missing = ~availability.bool()
    if by == "count":
        group = missing.sum(dim=1).long()
        names = ["complete"] + [f"missing_{k}" for k in range(1, len(modality_names) + 1)]
    elif by == "pattern":
        group = (missing.long() * 2 ** torch.arange(len(modality_names))).sum(dim=1)
        names = ["complete"] + ["missing_" + "+".join(name for m, name in enumerate(modality_names) if p >> m & 1)
                                for p in range(1, 2 ** len(modality_names))]
    else:
        raise ValueError(f"unknown grouping {by!r}; expected one of {ITEM_GROUPINGS}")
    group[0] = 0
    return group, names
