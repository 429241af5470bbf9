"""Per-pattern score calibration (ours, option `score_calibration: pattern`), fitted after training.

Items that miss a modality get scores on another scale than complete items, so a mixed ranking shows one group far
more than the other. The fit has two steps, neither of which sees a test item:
  1. Standardise: for every missing pattern p, the mean and standard deviation of the scores of warm items with
     p's modalities hidden (imputed exactly as a new item missing them is), against the training users. Every
     pattern gets a scale, even one that no validation item has.
  2. Place: for each pattern among the validation items, a shift (and a scale factor) of the standardised scores,
     chosen by coordinate search to maximise the validation metric on the ranking of the validation items. The
     search starts from the better of the raw and the standardised scores, so it never ends below either.
The result is scale_p * s + shift_p per pattern, held by the model (ContentRecommender.set_calibration).
"""
from logging import getLogger
from typing import Any, Dict, Tuple

import torch

from recbole_milk.data.roles import ROLE_VALID
from recbole_milk.model.content_inputs import ItemContent, missing_pattern

SHIFTS = torch.linspace(-2.0, 2.0, 41)
SCALE_FACTORS = torch.tensor([0.6, 0.8, 1.0, 1.25, 1.6])
SWEEPS = 2
# Warm items and users sampled for the standardising statistics: enough for stable moments, bounded cost.
SAMPLE_ITEMS = 4096
SAMPLE_USERS = 4096
# At most this many validation scores (users x validation items) are searched over; users are sampled beyond it.
MAX_VALID_SCORES = 20_000_000


def _pattern_availability(pattern: int, num_modalities: int) -> torch.Tensor:
    return torch.tensor([not (pattern >> m) & 1 for m in range(num_modalities)])


@torch.no_grad()
def _standardising_moments(model: Any, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the raw scores per missing pattern, from warm items with the pattern's modalities hidden."""
    device = model.item_availability.device
    warm = torch.nonzero(model.warm_items & (model.item_pattern == 0)).squeeze(1)
    if warm.numel() == 0:
        warm = torch.nonzero(model.warm_items).squeeze(1)
    warm = warm[torch.randperm(warm.numel(), generator=generator)[:SAMPLE_ITEMS].to(device)]
    users = torch.randperm(model.n_users - 1, generator=generator)[:SAMPLE_USERS].to(device) + 1
    user_r = model.user_representations(users)
    fills = model._tables("prepared_fill")
    count = 2 ** model.num_modalities
    means, stds = torch.zeros(count), torch.ones(count)
    for pattern in range(count - 1):  # the last pattern misses every modality
        available = _pattern_availability(pattern, model.num_modalities).to(device)
        content = model.item_content(warm)
        rows = [part if available[m] else fill.expand_as(part) for m, (part, fill) in enumerate(zip(content.rows, fills))]
        hidden = ItemContent(rows, content.availability & available.unsqueeze(0))
        scores = user_r @ model.represent_items(hidden).t()
        means[pattern] = scores.mean().double().item()
        stds[pattern] = max(scores.std().double().item(), 1e-12)
    return means, stds


def _metric(scores: torch.Tensor, positives: torch.Tensor, k: int, name: str) -> float:
    """Mean over users (rows) of NDCG@k or Recall@k of a score matrix against a bool matrix of positives."""
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    hits = positives.gather(1, top).double()
    n_pos = positives.sum(dim=1).double()
    if name == "recall":
        return float((hits.sum(dim=1) / n_pos).mean())
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    ideal = torch.cumsum(discounts, 0)[(n_pos.clamp(max=k) - 1).long()]
    return float(((hits * discounts).sum(dim=1) / ideal).mean())


@torch.no_grad()
def fit_calibration(model: Any, valid_data: Any, config: Any) -> Dict[str, Any]:
    """Fit the model's per-pattern calibration on the validation split (see the module docstring); return what
    was fitted: per pattern present, its shift and scale factor, and the validation metric before and after."""
    logger = getLogger()
    generator = torch.Generator().manual_seed(int(config["seed"]))
    model.eval()
    means, stds = _standardising_moments(model, generator)

    dataset = valid_data._dataset
    device = model.item_availability.device
    items = torch.nonzero(torch.as_tensor(dataset.item_role) == ROLE_VALID).squeeze(1).to(device)
    inter_users = dataset.inter_feat[dataset.uid_field].to(device)
    inter_items = dataset.inter_feat[dataset.iid_field].to(device)
    users, user_rows = torch.unique(inter_users, return_inverse=True)
    limit = max(1, MAX_VALID_SCORES // max(items.numel(), 1))
    if users.numel() > limit:
        chosen = torch.zeros(users.numel(), dtype=torch.bool, device=device)
        chosen[torch.randperm(users.numel(), generator=generator)[:limit].to(device)] = True
        kept_rows = chosen[user_rows]
        inter_items, user_rows = inter_items[kept_rows], user_rows[kept_rows]
        users, user_rows = torch.unique(users[user_rows], return_inverse=True)
    column = torch.full((model.n_items,), -1, dtype=torch.long, device=device)
    column[items] = torch.arange(items.numel(), device=device)
    positives = torch.zeros(users.numel(), items.numel(), dtype=torch.bool, device=device)
    kept = column[inter_items] >= 0
    positives[user_rows[kept], column[inter_items[kept]]] = True

    raw = model.user_representations(users) @ model.represent_items(model.item_content(items), items).t()
    patterns = missing_pattern(model.item_availability[items])
    standard = (raw - means.to(device)[patterns]) / stds.to(device)[patterns]
    metric, _, k = config["valid_metric"].lower().partition("@")
    name, k = ("recall" if metric == "recall" else "ndcg"), int(k or 10)

    present, counts = torch.unique(patterns, return_counts=True)
    reference = int(present[counts.argmax()])

    def score(factor: torch.Tensor, offset: torch.Tensor) -> float:
        adjusted = standard * factor.to(device)[patterns] + offset.to(device)[patterns]
        return _metric(adjusted, positives, k, name)

    # The raw scores, written in the standardised parametrisation (equal up to one affine map for all items, which
    # no ranking sees), are a candidate too: the fit never ends below the uncalibrated model.
    raw_scale = stds / stds[reference]
    raw_shift = (means - means[reference]) / stds[reference]
    standardised = score(torch.ones_like(means), torch.zeros_like(means))
    uncalibrated = score(raw_scale, raw_shift)
    if uncalibrated > standardised:
        best, scale, shift = uncalibrated, raw_scale.clone(), raw_shift.clone()
    else:
        best, scale, shift = standardised, torch.ones_like(means), torch.zeros_like(means)
    for _ in range(SWEEPS):
        for pattern in (int(p) for p in present if int(p) != reference):
            for factor in SCALE_FACTORS:
                for offset in SHIFTS:
                    trial_scale, trial_shift = scale.clone(), shift.clone()
                    trial_scale[pattern], trial_shift[pattern] = factor, offset
                    value = score(trial_scale, trial_shift)
                    if value > best + 1e-12:
                        best, scale, shift = value, trial_scale, trial_shift
    model.set_calibration(scale / stds, shift - scale * means / stds)
    summary = {"metric": f"{name}@{k}", "uncalibrated": round(uncalibrated, 6), "standardised": round(standardised, 6),
               "fitted": round(best, 6),
               "reference_pattern": reference,
               "patterns": {int(p): {"items": int(c), "shift": round(float(shift[int(p)]), 4),
                                     "scale_factor": round(float(scale[int(p)]), 4)} for p, c in zip(present, counts)}}
    logger.info(f"Score calibration fitted on {users.numel()} validation users and {items.numel()} validation "
                f"items: {summary}")
    return summary
