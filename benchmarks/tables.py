"""Markdown tables of benchmark records: mean ± std over seeds, per dataset, setting and variant."""
import math
import statistics
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import grid

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
LABELS = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10", "recall@20": "Recall@20", "ndcg@20": "NDCG@20"}
COMPARISON_VARIANTS = ("MILK", "MILK recommended", "w/o both", *grid.BASELINES, "BPR", "Random")
ABLATION_VARIANTS = ("MILK", "w/o CMAM", "w/o CEIM", "w/o both", "w/o e=0", "w/o cs", "w/o random",
                     "MILK mean reduction")
OPTION_ROWS = ("MILK", *grid.OPTION_VARIANTS, "MILK recommended")
CURVE_VARIANTS = ("MILK", "MILK recommended", "w/o both")
# Variants run on both FTFT and FTMT: the ablations (their block runs both) and the recommended preset (main and
# robustness blocks).
ROBUSTNESS_VARIANTS = (*ABLATION_VARIANTS, "MILK recommended")
# Targets of the robust MILK (issue: recommended MILK against the best baseline, in every dataset and setting).
TARGET_RATIO, TARGET_GROUP_RATIO, TARGET_EXPOSURE = 1.10, 0.5, (0.67, 1.5)
FAITHFUL_TARGET = ("tiktok", "FTMT", 0.0110)

Index = Dict[Tuple[str, str, str, str], Dict[int, Dict[str, Any]]]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def index(records: List[Dict[str, Any]]) -> Index:
    """(dataset, experiment, variant, setting) -> seed -> record."""
    table: Index = defaultdict(dict)
    for record in records:
        table[(record["dataset"], record["experiment"], record["variant"], record["setting"])][record["seed"]] = record
    return table


def datasets_of(acc: Index) -> List[str]:
    order = ["tiktok", "ml-100k-mm", "synthetic"]
    found = {key[0] for key in acc}
    return [d for d in order if d in found] + sorted(found - set(order))


def metric_values(runs: Dict[int, Dict[str, Any]], metric: str, group: Optional[str] = None,
                  split: str = "test") -> List[float]:
    values = []
    for seed in sorted(runs):
        if group is None:
            result = runs[seed][f"{split}_result"]
        else:
            result = (runs[seed].get(f"{split}_result_by_group") or {}).get(group, {})
        if metric in result:
            values.append(float(result[metric]))
    return values


def exposure_values(runs: Dict[int, Dict[str, Any]], group: str = "missing_1", k: int = 20,
                    split: str = "test") -> List[float]:
    values = []
    for seed in sorted(runs):
        value = (runs[seed].get(f"{split}_exposure_by_group") or {}).get(group, {}).get(f"exposure@{k}")
        if value is not None:
            values.append(float(value))
    return values


def group_ratio(runs: Dict[int, Dict[str, Any]], group: str = "missing_1", split: str = "test") -> Optional[float]:
    """Mean group NDCG@20 of `group` over the mean of the complete group (ratio of the seed means)."""
    complete = metric_values(runs, "ndcg@20", "complete", split)
    other = metric_values(runs, "ndcg@20", group, split)
    if not complete or not other or statistics.fmean(complete) == 0:
        return None
    return statistics.fmean(other) / statistics.fmean(complete)


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _num(value: Optional[float], digits: int) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _seed_count(runs: int, with_exposure: int) -> str:
    """'3', or '3 (exposure: 1)' where older records of some seeds did not measure exposure."""
    return str(runs) if with_exposure in (0, runs) else f"{runs} (exposure: {with_exposure})"


def _mean(values: Sequence[float], digits: int = 2) -> str:
    return _num(statistics.fmean(values), digits) if values else "—"


def comparison_table(acc: Index, variants: Sequence[str] = COMPARISON_VARIANTS,
                     settings: Sequence[str] = ("FTMT", "MTMT")) -> List[str]:
    """Every dataset and setting: NDCG@20, Recall@20, missing-one/complete group NDCG and exposure ratio."""
    rows = []
    for dataset in datasets_of(acc):
        for setting in settings:
            for variant in variants:
                runs = acc.get((dataset, "accuracy", variant, setting))
                if runs:
                    exposure = exposure_values(runs)
                    rows.append([dataset, setting, variant, fmt(metric_values(runs, "ndcg@20")),
                                 fmt(metric_values(runs, "recall@20")), _num(group_ratio(runs), 2),
                                 _mean(exposure), _seed_count(len(runs), len(exposure))])
    header = ["dataset", "setting", "model", "NDCG@20", "Recall@20", "missing-one / complete NDCG@20",
              "exposure ratio (missing one)", "seeds"]
    return _table(header, rows) if rows else []


def _baselines_run(acc: Index, dataset: str, setting: str) -> int:
    return sum(bool(acc.get((dataset, "accuracy", name, setting))) for name in grid.BASELINES)


def _best_baseline(acc: Index, dataset: str, setting: str) -> Tuple[Optional[str], Optional[float]]:
    best = (None, None)
    for name in grid.BASELINES:
        values = metric_values(acc.get((dataset, "accuracy", name, setting), {}), "ndcg@20")
        if values and (best[1] is None or statistics.fmean(values) > best[1]):
            best = (name, statistics.fmean(values))
    return best


def targets_table(acc: Index, settings: Sequence[str] = ("FTMT", "MTMT"),
                  variants: Sequence[str] = ("MILK recommended", grid.PATTERN_FLOOR)) -> List[str]:
    """The recommended MILK (and its group-floor variant) against the targets, with the distance where one is
    missed."""
    rows = []
    for dataset in datasets_of(acc):
        for setting in settings:
            name, best = _best_baseline(acc, dataset, setting)
            for variant in variants:
                runs = acc.get((dataset, "accuracy", variant, setting))
                if not runs or best is None:
                    continue
                ndcg = statistics.fmean(metric_values(runs, "ndcg@20"))
                ratio, groups, exposure = ndcg / best, group_ratio(runs), exposure_values(runs)
                exposure_mean = statistics.fmean(exposure) if exposure else None
                checks = [ratio >= TARGET_RATIO, groups is not None and groups >= TARGET_GROUP_RATIO,
                          exposure_mean is not None and TARGET_EXPOSURE[0] <= exposure_mean <= TARGET_EXPOSURE[1]]
                # The best baseline is the best of those run so far: a partial grid says how many.
                baselines = f"{_baselines_run(acc, dataset, setting)}/{len(grid.BASELINES)}"
                rows.append([dataset, setting, variant, f"{ndcg:.4f}", str(len(runs)), f"{name} {best:.4f}",
                             baselines, f"{ratio:.2f}x", _num(groups, 2), _num(exposure_mean, 2),
                             " ".join("✓" if ok else "✗" for ok in checks)])
    header = ["dataset", "setting", "model", "NDCG@20", "seeds", "best baseline", "baselines run",
              f"ratio (≥ {TARGET_RATIO:.2f})", f"group ratio (≥ {TARGET_GROUP_RATIO})",
              f"exposure ({TARGET_EXPOSURE[0]}-{TARGET_EXPOSURE[1]})", "met"]
    return _table(header, rows) if rows else []


def split_group_table(acc: Index, variants: Sequence[str], settings: Sequence[str] = ("FTMT", "MTMT")) -> List[str]:
    """The group ratio and exposure on validation beside the test's, for the runs that recorded both: what a
    validation-selected option can see of the test's groups."""
    rows = []
    for dataset in datasets_of(acc):
        for setting in settings:
            for variant in variants:
                runs = {seed: run for seed, run in acc.get((dataset, "accuracy", variant, setting), {}).items()
                        if run.get("valid_result_by_group")}
                if not runs:
                    continue
                rows.append([dataset, setting, variant, _num(group_ratio(runs, split="valid"), 2),
                             _num(group_ratio(runs), 2), _mean(exposure_values(runs, split="valid")),
                             _mean(exposure_values(runs)), str(len(runs))])
    header = ["dataset", "setting", "model", "valid group ratio", "test group ratio", "valid exposure",
              "test exposure", "seeds"]
    return _table(header, rows) if rows else []


def paired_ratio(runs: Dict[int, Dict[str, Any]], reference: Dict[int, Dict[str, Any]], split: str) -> Optional[float]:
    """Mean of `runs` over the mean of `reference`, on the seeds both have: validation NDCG@10 (the early-stopping
    metric) for split 'valid', test NDCG@20 for 'test'."""
    seeds = sorted(set(runs) & set(reference))

    def score(run: Dict[str, Any]) -> Optional[float]:
        value = run.get("best_valid_score") if split == "valid" else run["test_result"].get("ndcg@20")
        return None if value is None else float(value)

    pairs = [(score(runs[s]), score(reference[s])) for s in seeds]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs or statistics.fmean(b for _, b in pairs) == 0:
        return None
    return statistics.fmean(a for a, _ in pairs) / statistics.fmean(b for _, b in pairs)


def variant_table(acc: Index, dataset: str, variants: Sequence[str], settings: Sequence[str],
                  paired: bool = False) -> List[str]:
    """One row per variant of one dataset; empty until a variant other than the reference row has a run. With
    `paired`, each row also gives its ratio to the first variant on the seeds both ran (validation and test)."""
    if not any(acc.get((dataset, "accuracy", v, s)) for v in variants[1:] for s in settings):
        return []
    header = ["variant"]
    for setting in settings:
        header += [f"{setting} NDCG@20", f"{setting} Recall@20"]
    if paired:
        header += [f"vs {variants[0]}, same seeds: valid / test"]
    header += ["missing-one / complete (FTMT)", "exposure (FTMT)", "seeds"]
    rows = []
    for variant in variants:
        cells = [acc.get((dataset, "accuracy", variant, s), {}) for s in settings]
        if not any(cells):
            continue
        row = [variant]
        for runs in cells:
            row += [fmt(metric_values(runs, "ndcg@20")), fmt(metric_values(runs, "recall@20"))]
        if paired:
            reference = acc.get((dataset, "accuracy", variants[0], settings[0]), {})
            ratios = [paired_ratio(cells[0], reference, split) for split in ("valid", "test")]
            row.append(" / ".join(_num(r, 2) + ("x" if r is not None else "") for r in ratios) if cells[0] else "—")
        ftmt = acc.get((dataset, "accuracy", variant, "FTMT"), {})
        row += [_num(group_ratio(ftmt), 2) if ftmt else "—", _mean(exposure_values(ftmt)) if ftmt else "—",
                "/".join(str(len(runs)) for runs in cells)]
        rows.append(row)
    return _table(header, rows) if rows else []


def robustness_losses(acc: Index, dataset: str, variant: str, metric: str = "ndcg@20") -> List[float]:
    """Per seed, the relative loss 1 - FTMT / FTFT of `metric`, over the seeds that have both runs."""
    ftft = acc.get((dataset, "accuracy", variant, "FTFT"), {})
    ftmt = acc.get((dataset, "accuracy", variant, "FTMT"), {})
    losses = []
    for seed in sorted(set(ftft) & set(ftmt)):
        base = ftft[seed]["test_result"].get(metric)
        if base:
            losses.append(1.0 - ftmt[seed]["test_result"][metric] / base)
    return losses


def robustness_table(acc: Index, dataset: str, variants: Sequence[str]) -> Tuple[List[str], List[Tuple[str, list]]]:
    rows, bars = [], []
    for variant in variants:
        losses = robustness_losses(acc, dataset, variant)
        if not losses:
            continue
        ftft = metric_values(acc.get((dataset, "accuracy", variant, "FTFT"), {}), "ndcg@20")
        ftmt = metric_values(acc.get((dataset, "accuracy", variant, "FTMT"), {}), "ndcg@20")
        rows.append([variant, fmt(ftft), fmt(ftmt), fmt([100 * x for x in losses], 1) + " %", str(len(losses))])
        bars.append((variant, losses))
    header = ["variant", "FTFT NDCG@20", "FTMT NDCG@20", "relative loss", "paired seeds"]
    return (_table(header, rows) if rows else []), bars


def curve_points(acc: Index, dataset: str, variant: str) -> List[Tuple[float, List[float]]]:
    """(ratio, test NDCG@20 per seed) of every measured ratio, over the seeds all of them have: each point averages
    the same seeds, so a partly run curve is not a comparison of different seeds."""
    measured = {ratio: runs for ratio in grid.CURVE_RATIOS
                if (runs := acc.get((dataset, "accuracy", variant, grid.ratio_setting(ratio))))}
    if not measured:
        return []
    common = set.intersection(*(set(runs) for runs in measured.values()))
    points = []
    for ratio, runs in measured.items():
        values = metric_values({seed: runs[seed] for seed in common}, "ndcg@20")
        if values:
            points.append((ratio, values))
    return points


def curve_table(acc: Index, dataset: str) -> List[str]:
    rows = []
    for variant in CURVE_VARIANTS:
        points = dict(curve_points(acc, dataset, variant))
        if len(points) > (1 if 0.0 in points else 0):
            seeds = len(next(iter(points.values())))
            rows.append([variant] + [fmt(points.get(r, [])) for r in grid.CURVE_RATIOS] + [str(seeds)])
    return _table(["variant"] + [f"{r:g}" for r in grid.CURVE_RATIOS] + ["paired seeds"], rows) if rows else []


def group_table(acc: Index, dataset: str, variants: Sequence[str],
                settings: Sequence[str] = ("FTMT", "MTMT", grid.THREE_WAY), experiment: str = "accuracy") -> List[str]:
    rows = []
    for setting in settings:
        for variant in variants:
            runs = acc.get((dataset, experiment, variant, setting))
            if not runs:
                continue
            groups = sorted({g for r in runs.values() for g in r.get("test_result_by_group", {})})
            for group in groups:
                users = metric_values(runs, "users", group)
                if not any(users):
                    continue  # no test user has a positive on an item of this group (e.g. missing_2 with M = 2)
                rows.append([setting, variant, group, f"{statistics.fmean(users):.0f}",
                             fmt(metric_values(runs, "ndcg@20", group)), fmt(metric_values(runs, "recall@20", group)),
                             _mean(exposure_values(runs, group)), str(len(runs))])
    header = ["setting", "variant", "test items", "users", "NDCG@20", "Recall@20", "exposure@20", "seeds"]
    return _table(header, rows) if rows else []


def cost_table(acc: Index, dataset: str) -> List[str]:
    rows = []
    for (data, experiment, variant, setting), runs in sorted(acc.items()):
        if data != dataset or experiment != "cost":
            continue
        for seed, r in sorted(runs.items()):
            rows.append([variant, setting, f"{r['train_seconds_per_epoch']:.2f}", _num(r.get("eval_seconds_mean"), 2),
                         f"{r['peak_rss_mb']:.0f}", _num(r.get("interactions_per_second"), 0),
                         str(r["epochs_trained"]), f"{r['wall_seconds']:.0f}", _num(r.get("cpu_seconds"), 0),
                         _num(r.get("load_average_1m"), 1)])
    header = ["variant", "setting", "s / epoch", "s / evaluation", "peak RSS (MB)", "train interactions / s",
              "epochs", "wall s", "CPU s", "load (1 min)"]
    return _table(header, rows) if rows else []


def scaling_table(acc: Index, dataset: str) -> List[str]:
    runs: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for (data, experiment, variant, setting), by_seed in acc.items():
        if data == dataset and experiment == "scaling" and by_seed:
            runs[(variant, int(setting[1:]))] = next(iter(by_seed.values()))
    if not runs:
        return []
    rows = []
    for variant, factor in sorted(runs, key=lambda key: (key[0] != "MILK", key)):
        r, base = runs[(variant, factor)], runs.get((variant, 1))
        ratio = r["train_seconds_per_epoch"] / base["train_seconds_per_epoch"] if base else float("nan")
        rows.append([variant, f"x{factor}", _num(r.get("train_interactions"), 0), f"{r['train_seconds_per_epoch']:.2f}",
                     f"{ratio:.2f}", _num(r.get("interactions_per_second"), 0), f"{r['peak_rss_mb']:.0f}"])
    return _table(["variant", "interactions", "train interactions", "s / epoch", "epoch time vs x1",
                   "interactions / s", "peak RSS (MB)"], rows)


def progress_table(records: List[Dict[str, Any]], plans: Sequence[Tuple[str, grid.Profile]]) -> List[str]:
    """Cells done and planned per dataset and block."""
    done = {(r["dataset"], r["experiment"], r["variant"], r["setting"], r["seed"]) for r in records}
    rows = []
    for dataset, profile in plans:
        seen = set()
        for block in profile.blocks:
            keys = [c.key for c in grid.expand(profile, [block.name], dataset) if c.key not in seen]
            seen.update(keys)
            rows.append([dataset, block.name, str(sum(k in done for k in keys)), str(len(keys))])
    return _table(["dataset", "block", "cells done", "cells planned"], rows)
