"""Per-pattern score calibration (ours, option `score_calibration: pattern`), fitted after training.

Items that miss a modality get scores on another scale than complete items, so a mixed ranking shows one group far
more than the other. Calibration turns every score into the log-odds that the item is relevant, per missing pattern
(Platt scaling); ranking by those is ranking by the probability of relevance, whatever the pattern. Neither step
sees a test item:
  1. Standardise: for every missing pattern p, the mean and standard deviation of the scores of warm items with
     p's modalities hidden (imputed exactly as a new item missing them is), against the training users. Every
     pattern gets a scale, even one that no validation item has.
  2. Fit: a logistic regression of relevance on the standardised score, one slope and intercept per pattern, over
     every (validation user, validation item) pair, the user's validation interactions being the positives. A
     smooth objective over all pairs, so a few popular items cannot steer it as they would a top-K metric.
     Patterns without validation items keep the pooled fit.
The result is scale_p * s + shift_p per pattern, held by the model (ContentRecommender.set_calibration). The run
keeps it only if the validation ranking is at least as good with it (recbole_milk.quick_start), so calibration is
selected on the validation split too.
"""
from logging import getLogger
from typing import Any, Dict, Tuple

import torch

from recbole_milk.data.roles import ROLE_VALID
from recbole_milk.model.content_inputs import ItemContent, missing_pattern

FIT_STEPS = 100
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
        rows = [part if available[m] else fill.expand_as(part)
                for m, (part, fill) in enumerate(zip(content.rows, fills))]
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


def _platt(standard: torch.Tensor, positives: torch.Tensor, patterns: torch.Tensor,
           count: int) -> Tuple[torch.Tensor, torch.Tensor, float, float]:
    """(slope, intercept) per pattern of the logistic regression of `positives` on `standard` (users x items), and
    the mean log loss of the pooled start and of the fit."""
    weights = torch.zeros(2, count, dtype=torch.float64, requires_grad=True)
    target = positives.double()
    features = standard.double()

    def loss_of(slope: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
        logits = features * slope[patterns] + intercept[patterns]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

    # Pooled start: one slope and intercept for every pattern, fitted first.
    pooled = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([pooled], max_iter=FIT_STEPS, line_search_fn="strong_wolfe")
    optimizer.step(lambda: _backward(optimizer, loss_of(pooled[0].expand(count), pooled[1].expand(count))))
    with torch.no_grad():
        weights[0], weights[1] = pooled[0], pooled[1]
        start = float(loss_of(weights[0], weights[1]))
    optimizer = torch.optim.LBFGS([weights], max_iter=FIT_STEPS, line_search_fn="strong_wolfe")
    optimizer.step(lambda: _backward(optimizer, loss_of(weights[0], weights[1])))
    with torch.no_grad():
        return weights[0].detach().float(), weights[1].detach().float(), start, float(loss_of(weights[0], weights[1]))


def _backward(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """The closure LBFGS calls: fresh gradients of `loss`."""
    optimizer.zero_grad()
    loss.backward()
    return loss


def fit_calibration(model: Any, valid_data: Any, config: Any) -> Dict[str, Any]:
    """Fit the model's per-pattern calibration on the validation split (see the module docstring); return what
    was fitted: per pattern present, its slope and intercept, the validation log loss before and after, and the
    validation metric on the validation items' ranking before and after."""
    logger = getLogger()
    generator = torch.Generator().manual_seed(int(config["seed"]))
    model.eval()
    with torch.no_grad():
        means, stds = _standardising_moments(model, generator)
        users, items, positives = _validation_pairs(model, valid_data, generator)
        raw = model.user_representations(users) @ model.represent_items(model.item_content(items), items).t()
    device = raw.device
    patterns = missing_pattern(model.item_availability[items])
    standard = (raw - means.to(device)[patterns]) / stds.to(device)[patterns]
    metric, _, k = config["valid_metric"].lower().partition("@")
    name, k = ("recall" if metric == "recall" else "ndcg"), int(k or 10)

    slope, intercept, pooled_loss, fitted_loss = _platt(standard.cpu(), positives.cpu(), patterns.cpu(),
                                                        means.shape[0])
    present, counts = torch.unique(patterns, return_counts=True)
    fitted = torch.zeros(means.shape[0], dtype=torch.bool)
    fitted[present.cpu()] = True
    # Patterns no validation item has: the pooled fit, i.e. their standardised score as is.
    slope = torch.where(fitted, slope, slope[present.cpu()].mean())
    intercept = torch.where(fitted, intercept, intercept[present.cpu()].mean())
    adjusted = standard * slope.to(device)[patterns] + intercept.to(device)[patterns]
    summary = {"metric": f"{name}@{k}", "uncalibrated": round(_metric(raw, positives, k, name), 6),
               "fitted": round(_metric(adjusted, positives, k, name), 6),
               "log_loss_pooled": round(pooled_loss, 6), "log_loss_fitted": round(fitted_loss, 6),
               "patterns": {int(p): {"items": int(c), "slope": round(float(slope[int(p)]), 4),
                                     "intercept": round(float(intercept[int(p)]), 4)}
                            for p, c in zip(present.tolist(), counts.tolist())}}
    model.set_calibration(slope / stds, intercept - slope * means / stds)
    logger.info(f"Score calibration fitted on {users.numel()} validation users and {items.numel()} validation "
                f"items: {summary}")
    return summary


@torch.no_grad()
def _validation_pairs(model: Any, valid_data: Any,
                      generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(users, validation items, bool positives users x items) of the validation split, users sampled if many."""
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
    return users, items, positives
