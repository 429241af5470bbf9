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
  3. Floor (option `calibration_min_pattern_ratio` > 0, ours): Platt scaling ranks by the probability of relevance,
     and where a modality carries little signal that leaves its items rarely shown. The floor adds one shift per
     incomplete pattern present in validation, searched by coordinate descent on the ranking the validation metric
     reads (validation users against the validation loader's candidates, calibrated scores): first the
     smallest shortfall of any missing pattern's items below floor x the complete items' NDCG, then the highest
     NDCG. Per pattern, not per missing count: pooled, the items that keep a strong modality can carry the group
     over the floor while those left with a weak one are still almost never shown. It trades validation accuracy
     for exposure, by the user's explicit choice.
The result is scale_p * s + shift_p per pattern, held by the model (ContentRecommender.set_calibration). The run
keeps it only if the validation ranking is at least as good with it, or if it lifts the patterns that the
uncalibrated model leaves below the floor (recbole_milk.quick_start), so calibration is selected on the validation
split too.
"""
from logging import getLogger
from typing import Any, Dict, List, Optional, Tuple

import torch

from recbole_milk.data.roles import ROLE_VALID
from recbole_milk.evaluation import GroupMetricAccumulator
from recbole_milk.model.content_inputs import ItemContent, missing_pattern

FIT_STEPS = 100
# Warm items and users sampled for the standardising statistics: enough for stable moments, bounded cost.
SAMPLE_ITEMS = 4096
SAMPLE_USERS = 4096
# At most this many validation scores (users x validation items) are searched over; users are sampled beyond it.
MAX_VALID_SCORES = 20_000_000
# The floor's search: upward shifts in standard deviations of the calibrated validation scores, and coordinate sweeps.
FLOOR_SHIFTS = torch.arange(0.0, 4.01, 0.1)
FLOOR_SWEEPS = 3


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


def _by_group(top: torch.Tensor, positives: Tuple[torch.Tensor, torch.Tensor], item_group: torch.Tensor,
              groups: int, name: str) -> torch.Tensor:
    """NDCG@k or Recall@k per item group from each row's top k columns (best first) and the (row, column) pairs of
    the positives, by the evaluation's own group metric (GroupMetricAccumulator): a group counts only the positives
    whose item (column) is in it, averaged over the users with at least one; NaN for a group without positives."""
    rows, columns = positives
    accumulator = GroupMetricAccumulator(item_group.cpu(), [str(g) for g in range(groups)], [top.shape[1]], [name])
    accumulator.add(top.cpu(), rows.cpu(), columns.cpu(), len(item_group))
    return accumulator.sums[:, 0, 0] / accumulator.users


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices


def _metric(scores: torch.Tensor, positives: torch.Tensor, k: int, name: str) -> float:
    """Mean over users (rows) with a positive of NDCG@k or Recall@k of a score matrix."""
    everything = torch.zeros(scores.shape[1], dtype=torch.long)
    return float(_by_group(_top(scores, k), positives.nonzero(as_tuple=True), everything, 1, name)[0])


def group_ndcg(scores: torch.Tensor, positives: torch.Tensor, item_group: torch.Tensor, groups: int,
               k: int) -> Tuple[float, torch.Tensor]:
    """(NDCG@k over all positives, NDCG@k per group) of a score matrix whose columns are items in groups
    `item_group` (see _by_group); one ranking serves both."""
    top, pairs = _top(scores, k), positives.nonzero(as_tuple=True)
    everything = torch.zeros_like(item_group)
    return float(_by_group(top, pairs, everything, 1, "ndcg")[0]), _by_group(top, pairs, item_group, groups, "ndcg")


def _shortfall(per_group: torch.Tensor, reference: float, constrained: List[int], floor: float) -> float:
    """How far the constrained groups fall below floor x `reference` (the complete items' NDCG), as ratios,
    summed."""
    values = per_group[constrained]
    values = torch.where(torch.isnan(values), torch.full_like(values, float("inf")), values)
    return float((floor - values / reference).clamp(min=0).sum())


def floor_shifts(scores: torch.Tensor, positives: torch.Tensor, patterns: torch.Tensor, pattern_count: int,
                 item_group: torch.Tensor, groups: int, floor: float, k: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Per-pattern shifts of `scores` (users x items; item i has missing pattern patterns[i] and is in group
    item_group[i], group 0 being the complete items) that bring every other group to at least `floor` x the
    complete group's NDCG@k where they can, at the highest NDCG@k; and what the search found (see the module
    docstring, step 3).

    The reference is the complete group's NDCG before any shift, so burying complete items never counts as
    meeting the floor; shifts only go up, and only for the groups below the floor at the start of a sweep: the floor
    lifts the items it protects. Items that miss every modality (the last pattern) have no content to rank them by
    and are left out."""
    unit = float(scores.std()) or 1.0
    shifts = torch.zeros(pattern_count, dtype=scores.dtype)
    overall, per_group = group_ndcg(scores, positives, item_group, groups, k)
    start = {"ndcg": overall, "group_ndcg": per_group}
    reference = float(per_group[0])
    if not reference > 0:  # no complete item is found (or has positives): nothing to hold the others to
        return shifts, _floor_summary(floor, {}, start, overall, per_group, met=False)
    empty = int(pattern_count) - 1
    constrained = [g for g in range(1, groups) if not torch.isnan(per_group[g])
                   and bool((item_group == g).logical_and(patterns != empty).any())]

    def measure(candidate: torch.Tensor) -> Tuple[float, float, torch.Tensor]:
        overall, per_group = group_ndcg(scores + candidate[patterns], positives, item_group, groups, k)
        return _shortfall(per_group, reference, constrained, floor), overall, per_group

    shortfall = _shortfall(per_group, reference, constrained, floor)
    # Only the patterns below the floor move, those of each sweep: the floor is a constraint, not a metric to tune,
    # and a ranking that meets it is left as it is.
    searched: List[int] = []
    for _ in range(FLOOR_SWEEPS):
        short = [g for g in constrained if per_group[g] < floor * reference]
        lifted = torch.isin(item_group, torch.tensor(short, dtype=item_group.dtype)) & (patterns != 0) \
            & (patterns != empty)
        below = sorted(int(p) for p in torch.unique(patterns[lifted]))
        if not below:
            break
        searched = sorted(set(searched) | set(below))
        moved = False
        for pattern in below:
            for step in FLOOR_SHIFTS.tolist():
                candidate = shifts.clone()
                candidate[pattern] = step * unit
                result = measure(candidate)
                if (result[0], -result[1]) < (shortfall, -overall):
                    shifts, (shortfall, overall, per_group), moved = candidate, result, True
        if not moved:
            break
    return shifts, _floor_summary(floor, {p: round(float(shifts[p]), 4) for p in searched}, start, overall,
                                  per_group, met=shortfall == 0.0)


def _floor_summary(floor: float, shifts: Dict[int, float], start: Dict[str, Any], overall: float,
                   per_group: torch.Tensor, met: bool) -> Dict[str, Any]:
    """What floor_shifts found; the ratios are over the complete group's NDCG before the shifts."""
    return {"floor": floor, "shifts": shifts, "ndcg_before": round(start["ndcg"], 6), "ndcg_after": round(overall, 6),
            "group_ratios_before": group_ratios(start["group_ndcg"]),
            "group_ratios_after": group_ratios(per_group, reference=float(start["group_ndcg"][0])), "met": met}


def group_ratios(per_group: torch.Tensor, reference: Optional[float] = None) -> List[Optional[float]]:
    """Each incomplete group's NDCG over `reference` (default: the complete group's, group 0), None where
    undefined."""
    reference = float(per_group[0]) if reference is None else reference
    if not reference > 0:
        return [None] * (len(per_group) - 1)
    return [None if torch.isnan(v) else round(float(v) / reference, 4) for v in per_group[1:]]


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
        items = _items_of_role(valid_data, ROLE_VALID, model.item_availability.device)
        users, positives = _validation_pairs(model, valid_data, items, generator)
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
    scale, shift = slope / stds, intercept - slope * means / stds
    floor = float(config["calibration_min_pattern_ratio"] or 0.0)
    if floor > 0:
        shifts, summary["floor"] = _floor_on_candidates(model, valid_data, scale, shift, floor, k, generator)
        shift = shift + shifts
    model.set_calibration(scale, shift)
    logger.info(f"Score calibration fitted on {users.numel()} validation users and {items.numel()} validation "
                f"items: {summary}")
    return summary


def worth_keeping(summary: Dict[str, Any], before: float, fitted: float, bigger: bool) -> bool:
    """Whether a run keeps the fitted calibration: its validation metric `fitted` is at least as good as `before`,
    or a pattern floor was asked for, missed by the uncalibrated ranking and approached by the calibrated one."""
    if (fitted >= before) if bigger else (fitted <= before):
        return True
    floor = summary.get("floor")
    if not floor:
        return False
    gains = [after - start for start, after in zip(floor["group_ratios_uncalibrated"], floor["group_ratios_after"])
             if start is not None and after is not None and start < floor["floor"]]
    return bool(gains) and min(gains) >= 0 and max(gains) > 0


@torch.no_grad()
def _floor_on_candidates(model: Any, valid_data: Any, scale: torch.Tensor, shift: torch.Tensor, floor: float,
                         k: int, generator: torch.Generator) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """floor_shifts on the ranking the validation metric reads: validation users against the loader's candidates
    (with candidate_pool: all_new the test items too, as the negatives they are there), scores calibrated, one
    group per missing pattern."""
    device = model.item_availability.device
    pool = valid_data.candidate_items
    items = (torch.arange(1, model.n_items, device=device) if pool is None
             else torch.nonzero(pool.to(device)).squeeze(1))
    users, positives = _validation_pairs(model, valid_data, items, generator)
    patterns = model.item_pattern[items].cpu()
    raw = model.user_representations(users) @ model.represent_items(model.item_content(items), items).t()
    calibrated = raw * scale.to(device)[patterns] + shift.to(device)[patterns]
    count = scale.numel()
    # Every missing pattern is its own group: a pooled group can meet the floor while one pattern stays buried.
    shifts, found = floor_shifts(calibrated.cpu(), positives.cpu(), patterns, count, patterns, count, floor, k)
    # Before: the ranking of the model as trained, the one the run keeps if calibration is dropped.
    found["group_ratios_uncalibrated"] = group_ratios(group_ndcg(raw.cpu(), positives.cpu(), patterns, count, k)[1])
    found.update(users=int(users.numel()), candidates=int(items.numel()))
    return shifts.to(shift.dtype), found


def _items_of_role(valid_data: Any, role: int, device: torch.device) -> torch.Tensor:
    return torch.nonzero(torch.as_tensor(valid_data._dataset.item_role) == role).squeeze(1).to(device)


@torch.no_grad()
def _validation_pairs(model: Any, valid_data: Any, items: torch.Tensor,
                      generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """(users, bool positives users x `items`) of the validation split: its users (sampled if many) and which of
    `items` they interacted with in it."""
    dataset = valid_data._dataset
    device = model.item_availability.device
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
    return users, positives
