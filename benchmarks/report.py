"""Aggregate benchmark records into markdown tables (mean +- std over seeds) and PNG figures.

Figures need matplotlib, which the `bench` extra installs (pip install ".[bench]"); without it the tables are still
written and the figures are skipped with a message.
"""
import math
import os
import statistics
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import grid
from recbole_milk.atomic import atomic_write, write_text

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
LABELS = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10", "recall@20": "Recall@20", "ndcg@20": "NDCG@20"}
TABLE2_VARIANTS = ("MILK", "w/o both", *grid.BASELINES, "BPR", "Random")
# MILK (default and tuned) against every new-item baseline, one row per model.
COMPARISON_VARIANTS = ("MILK", grid.TUNED_VARIANT, "w/o both", *grid.BASELINES, "BPR", "Random")
ABLATION_VARIANTS = ("MILK", "w/o CMAM", "w/o CEIM", "w/o both", "w/o e=0", "w/o cs", "w/o random")
IMPUTATION_VARIANTS = ("MILK", "MILK zero-imputed", "MILK fusion=available")
CURVE_VARIANTS = ("MILK", "w/o both")
SPARSE_VARIANTS = ("MILK", "MILK sparse users")
ROBUSTNESS_FILE = "robustness.png"
CURVE_FILE = "missing_ratio_curve.png"


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def index(records: List[Dict[str, Any]]) -> Dict[Tuple[str, str, str], Dict[int, Dict[str, Any]]]:
    """(experiment, variant, setting) -> seed -> record."""
    table: Dict[Tuple[str, str, str], Dict[int, Dict[str, Any]]] = defaultdict(dict)
    for record in records:
        table[(record["experiment"], record["variant"], record["setting"])][record["seed"]] = record
    return table


def metric_values(runs: Dict[int, Dict[str, Any]], metric: str, group: Optional[str] = None) -> List[float]:
    values = []
    for seed in sorted(runs):
        result = runs[seed]["test_result"] if group is None else runs[seed]["test_result_by_group"].get(group, {})
        if metric in result:
            values.append(float(result[metric]))
    return values


def robustness_losses(acc: Dict, variant: str, metric: str = "ndcg@20") -> List[float]:
    """Per seed, the relative loss 1 - FTMT / FTFT of `metric`, over the seeds that have both runs."""
    ftft, ftmt = acc.get(("accuracy", variant, "FTFT"), {}), acc.get(("accuracy", variant, "FTMT"), {})
    losses = []
    for seed in sorted(set(ftft) & set(ftmt)):
        base = ftft[seed]["test_result"].get(metric)
        if base:
            losses.append(1.0 - ftmt[seed]["test_result"][metric] / base)
    return losses


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _n(runs: Dict[int, Any]) -> str:
    return str(len(runs))


def table2(acc: Dict, settings: Sequence[str] = ("FTFT", "FTMT", "MTMT")) -> List[str]:
    rows = []
    for setting in settings:
        for variant in TABLE2_VARIANTS:
            runs = acc.get(("accuracy", variant, setting))
            if runs:
                rows.append([setting, variant] + [fmt(metric_values(runs, m)) for m in METRICS] + [_n(runs)])
    return _table(["setting", "model"] + [LABELS[m] for m in METRICS] + ["seeds"], rows) if rows else []


def variant_table(acc: Dict, variants: Sequence[str], settings: Sequence[str]) -> List[str]:
    """One row per variant; empty until a variant other than the first (the reference row) has a run."""
    if not any(acc.get(("accuracy", v, s)) for v in variants[1:] for s in settings):
        return []
    header = ["variant"]
    for setting in settings:
        header += [f"{setting} NDCG@20", f"{setting} Recall@20"]
    header.append("seeds")
    rows = []
    for variant in variants:
        cells = [acc.get(("accuracy", variant, s), {}) for s in settings]
        if not any(cells):
            continue
        row = [variant]
        for runs in cells:
            row += [fmt(metric_values(runs, "ndcg@20")), fmt(metric_values(runs, "recall@20"))]
        row.append("/".join(_n(runs) for runs in cells))
        rows.append(row)
    return _table(header, rows) if rows else []


def robustness_table(acc: Dict, variants: Sequence[str]) -> Tuple[List[str], List[Tuple[str, List[float]]]]:
    rows, bars = [], []
    for variant in variants:
        losses = robustness_losses(acc, variant)
        if not losses:
            continue
        ftft = metric_values(acc.get(("accuracy", variant, "FTFT"), {}), "ndcg@20")
        ftmt = metric_values(acc.get(("accuracy", variant, "FTMT"), {}), "ndcg@20")
        rows.append([variant, fmt(ftft), fmt(ftmt), fmt([100 * x for x in losses], 1) + " %", str(len(losses))])
        bars.append((variant, losses))
    header = ["variant", "FTFT NDCG@20", "FTMT NDCG@20", "relative loss", "paired seeds"]
    return (_table(header, rows) if rows else []), bars


def curve_points(acc: Dict, variant: str) -> List[Tuple[float, List[float]]]:
    points = []
    for ratio in grid.CURVE_RATIOS:
        values = metric_values(acc.get(("accuracy", variant, grid.ratio_setting(ratio)), {}), "ndcg@20")
        if values:
            points.append((ratio, values))
    return points


def curve_table(acc: Dict) -> List[str]:
    rows = []
    for variant in CURVE_VARIANTS:
        points = dict(curve_points(acc, variant))
        if len(points) > (1 if 0.0 in points else 0):
            rows.append([variant] + [fmt(points.get(r, [])) for r in grid.CURVE_RATIOS]
                        + ["/".join(str(len(points.get(r, []))) for r in grid.CURVE_RATIOS)])
    return _table(["variant"] + [f"{r:g}" for r in grid.CURVE_RATIOS] + ["seeds"], rows) if rows else []


def group_table(acc: Dict, variants: Sequence[str], settings: Sequence[str] = ("FTMT", "MTMT")) -> List[str]:
    rows = []
    for setting in settings:
        for variant in variants:
            runs = acc.get(("accuracy", variant, setting))
            if not runs:
                continue
            groups = sorted({g for r in runs.values() for g in r.get("test_result_by_group", {})})
            for group in groups:
                users = metric_values(runs, "users", group)
                if not any(users):
                    continue  # no test user has a positive on an item of this group (e.g. missing_2 with M = 2)
                rows.append([setting, variant, group, f"{statistics.fmean(users):.0f}",
                             fmt(metric_values(runs, "ndcg@20", group)), fmt(metric_values(runs, "recall@20", group)),
                             _n(runs)])
    header = ["setting", "variant", "test items", "users", "NDCG@20", "Recall@20", "seeds"]
    return _table(header, rows) if rows else []


def tuned_table(acc: Dict, tuned: Optional[Dict[str, Any]]) -> List[str]:
    if not tuned or not any(k[1] == grid.TUNED_VARIANT for k in acc):
        return []
    rows = []
    for setting in ("FTMT", "MTMT"):
        for label, variant in (("default", "MILK"), ("tuned", grid.TUNED_VARIANT)):
            runs = acc.get(("accuracy", variant, setting), {})
            if runs:
                rows.append([setting, label] + [fmt(metric_values(runs, m)) for m in METRICS] + [_n(runs)])
    return _table(["setting", "MILK"] + [LABELS[m] for m in METRICS] + ["seeds"], rows)


def cost_table(acc: Dict) -> List[str]:
    rows = []
    for (experiment, variant, setting), runs in sorted(acc.items()):
        if experiment != "cost":
            continue
        for seed, r in sorted(runs.items()):
            rows.append([variant, setting, f"{r['train_seconds_per_epoch']:.2f}", _num(r.get("eval_seconds_mean"), 2),
                         f"{r['peak_rss_mb']:.0f}", _num(r.get("interactions_per_second"), 0),
                         str(r["epochs_trained"]), f"{r['wall_seconds']:.0f}", _num(r.get("cpu_seconds"), 0),
                         _num(r.get("load_average_1m"), 1)])
    header = ["variant", "setting", "s / epoch", "s / evaluation", "peak RSS (MB)", "train interactions / s",
              "epochs", "wall s", "CPU s", "load (1 min)"]
    return _table(header, rows) if rows else []


def scaling_table(acc: Dict) -> List[str]:
    runs: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for (experiment, variant, setting), by_seed in acc.items():
        if experiment == "scaling" and by_seed:
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


def _num(value: Optional[float], digits: int) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def progress_table(records: List[Dict[str, Any]], profile: grid.Profile, tuned: Optional[Dict[str, Any]]) -> List[str]:
    done = {(r["experiment"], r["variant"], r["setting"], r["seed"]) for r in records}
    rows, seen = [], set()
    for block in profile.blocks:
        keys = [c.key for c in grid.expand(profile, [block.name], tuned) if c.key not in seen]
        seen.update(keys)
        if block.variants == [grid.TUNED_VARIANT] and tuned is None:
            rows.append([block.name, "0", "waits for `tune`"])
            continue
        rows.append([block.name, str(sum(k in done for k in keys)), str(len(keys))])
    return _table(["block", "cells done", "cells planned"], rows)


def _save_figure(plt: Any, fig: Any, path: str) -> str:
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=120, format="png")
    plt.close(fig)
    return path


def draw_figures(acc: Dict, bars: List[Tuple[str, List[float]]], out_dir: str) -> List[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('figures skipped: matplotlib is missing; install the bench extra: pip install ".[bench]"')
        return []
    files = []
    if bars:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        names = [name for name, _ in bars]
        means = [100 * mean_std(v)[0] for _, v in bars]
        stds = [100 * mean_std(v)[1] for _, v in bars]
        ax.bar(range(len(bars)), means, yerr=stds, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(bars)), names, rotation=20, ha="right")
        ax.set_ylabel("NDCG@20 loss FTFT → FTMT (%)")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title("Robustness: relative NDCG@20 loss (mean ± std over seeds)")
        files.append(_save_figure(plt, fig, os.path.join(out_dir, ROBUSTNESS_FILE)))
    curves = {variant: curve_points(acc, variant) for variant in CURVE_VARIANTS}
    if any(len(points) > 1 for points in curves.values()):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for variant, points in curves.items():
            if not points:
                continue
            xs = [x for x, _ in points]
            ax.errorbar(xs, [mean_std(v)[0] for _, v in points], yerr=[mean_std(v)[1] for _, v in points],
                        marker="o", capsize=4, label=variant)
        ax.set_xlabel("share of new items missing a modality")
        ax.set_ylabel("test NDCG@20")
        ax.set_xticks(list(grid.CURVE_RATIOS))
        ax.legend()
        ax.set_title("NDCG@20 against the missing-modality ratio (mean ± std)")
        files.append(_save_figure(plt, fig, os.path.join(out_dir, CURVE_FILE)))
    return files


README_SETUP = """\
TikTok as the paper's authors preprocessed it (visual + acoustic features, converted with `dataset_prep/mmrec.py`),
on the reference new-item split (5,368 warm, 671 valid and 671 test items) and the reference masks of
`../shared/data/tiktok` (FTMT: half of the new items miss one modality; MTMT: also 30% of the warm items),
mean-imputed from warm rows. Candidates are all 1,342 new items. Early stopping on valid NDCG@10 every 10 epochs,
patience 3, at most 300 epochs; test at the best valid epoch. Seeds 2023-2027 vary model initialisation, negative
sampling and MILK's environment draws; the split and masks are the same in every run (the missing-ratio curve
simulates its masks with split_seed 2023). MILK uses the paper's TikTok values (invariance_weight 50, align_weight
0.5, dirichlet_alpha 0.1) unless marked tuned. The nine new-item baselines use their yaml defaults, 3 seeds and at
most 100 epochs; the two-stage ones (DropoutNet, Heater, GAR, GoRec) read warm BPR embeddings that the runner
exports once (100 epochs, seed 2023, warm items only) on the same split. Every run is its own process with one
torch thread, on a shared 2-core CPU machine. "w/o both" is MILK with both modules off: content-only BPR on the
equal-weight fusion (DUIF-style). BPR and Random ignore content, so their rows are the same in every setting.
"""


def readme_section(records: List[Dict[str, Any]], profile: grid.Profile, tuned: Optional[Dict[str, Any]],
                   figure_dir: str, commands: Sequence[str], embedded: bool = False) -> str:
    """The README's "Results" section: setup, commands, the main tables and the figures, from the same records.

    `embedded`: without the "## Results" heading and with table headings one level down, to sit under a
    README subsection (see splice_readme)."""
    acc = index(records)
    robust, _ = robustness_table(acc, ABLATION_VARIANTS)
    parts = ([] if embedded else ["## Results", ""]) + [README_SETUP, "Reproduce (the grid resumes where it stopped if killed):", "", "```bash",
             *commands, "```", ""]
    tables = [
        ("Table 2: new-item test accuracy, mean ± std over seeds", table2(acc)),
        ("MILK against the new-item baselines (NDCG@20 and Recall@20, mean ± std)",
         variant_table(acc, COMPARISON_VARIANTS, ("FTMT", "MTMT"))),
        ("Robustness: relative NDCG@20 loss from FTFT to FTMT (paired by seed)", robust),
        ("NDCG@20 against the share of new items missing a modality", curve_table(acc)),
        ("Ablations", variant_table(acc, ABLATION_VARIANTS, ("FTMT", "FTFT"))),
        ("Imputation and inference fusion", variant_table(acc, IMPUTATION_VARIANTS, ("FTMT", "MTMT"))),
        ("Per missing-pattern group", group_table(acc, ("MILK", "w/o both", "MILK fusion=available"))),
        ("Default vs tuned MILK" + (f" (tuned on valid: {tuned})" if tuned else ""), tuned_table(acc, tuned)),
        ("Cost", cost_table(acc)),
        ("Scaling: epoch time on the interactions duplicated with synthetic users", scaling_table(acc)),
        ("Lazy Adam on the user table (`sparse_user_gradients: true`): accuracy",
         variant_table(acc, SPARSE_VARIANTS, ("FTMT",))),
        ("Grid progress", progress_table(records, profile, tuned)),
    ]
    marks = "####" if embedded else "###"
    for heading, table in tables:
        parts += [f"{marks} {heading}", "", *(table or ["not run yet"]), ""]
        if heading.startswith("Robustness") and table:
            parts += [f"![robustness]({figure_dir}/{ROBUSTNESS_FILE})", ""]
        if heading.startswith("NDCG@20 against") and table:
            parts += [f"![missing-ratio curve]({figure_dir}/{CURVE_FILE})", ""]
    return "\n".join(parts)


def write_report(records: List[Dict[str, Any]], out_dir: str, profile: grid.Profile, title: str = "",
                 tuned: Optional[Dict[str, Any]] = None, commands: Sequence[str] = ()) -> List[str]:
    """Write results.md, readme_section.md and the figures into out_dir; return the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    acc = index(records)
    robust, bars = robustness_table(acc, ABLATION_VARIANTS)
    sections = [
        ("Table 2: new-item test accuracy (mean ± std over seeds)", table2(acc)),
        ("MILK against the new-item baselines (test)", variant_table(acc, COMPARISON_VARIANTS, ("FTMT", "MTMT"))),
        ("Ablations (test)", variant_table(acc, ABLATION_VARIANTS, ("FTMT", "FTFT"))),
        ("Robustness: relative NDCG@20 loss from FTFT to FTMT (per seed, then mean ± std)", robust),
        ("NDCG@20 against the share of new items missing a modality (0 = FTFT)", curve_table(acc)),
        ("Imputation and inference fusion (test)", variant_table(acc, IMPUTATION_VARIANTS, ("FTMT", "MTMT"))),
        ("Per missing-pattern group (test positives on items of that group)",
         group_table(acc, ("MILK", "w/o both", "MILK fusion=available"))),
        ("Default vs tuned MILK" + (f" (tuned: {tuned})" if tuned else ""), tuned_table(acc, tuned)),
        ("Cost (same machine, same grid run)", cost_table(acc)),
        ("Scaling: MILK epoch time on duplicated interactions", scaling_table(acc)),
        ("Lazy Adam on the user table (sparse_user_gradients: true): test accuracy",
         variant_table(acc, SPARSE_VARIANTS, ("FTMT",))),
        ("Grid progress", progress_table(records, profile, tuned)),
    ]
    lines = [f"# Benchmark results{': ' + title if title else ''}", "",
             f"Generated by `python -m benchmarks.run report` from {len(records)} runs. Do not edit by hand.", ""]
    for heading, table in sections:
        lines += [f"## {heading}", ""] + (table or ["not run yet"]) + [""]
    path = os.path.join(out_dir, "results.md")
    write_text(path, "\n".join(lines))
    figure_dir = os.path.relpath(out_dir, REPO) if _inside(out_dir, REPO) else out_dir
    section = os.path.join(out_dir, "readme_section.md")
    write_text(section, readme_section(records, profile, tuned, figure_dir, commands))
    return [path, section] + draw_figures(acc, bars, out_dir)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_BEGIN = "<!-- benchmark results: written by `python -m benchmarks.run report --readme=README.md`; do not edit -->"
README_END = "<!-- end of benchmark results -->"


def splice_readme(readme: str, section: str) -> None:
    """Replace what lies between README_BEGIN and README_END in `readme` by `section` (atomically)."""
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{readme} has no benchmark block: put the lines\n{README_BEGIN}\n{README_END}\nwhere the "
                         "results should go, then run report --readme again.")
    head = text[: begin + len(README_BEGIN)]
    write_text(readme, head + "\n\n" + section.strip("\n") + "\n\n" + text[end:])


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), root]) == root

