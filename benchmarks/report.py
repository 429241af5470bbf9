"""Aggregate benchmark records of one or more datasets into markdown tables and PNG figures.

Figures need matplotlib, which the `bench` extra installs (pip install ".[bench]"); without it the tables are still
written and the figures are skipped with a message.
"""
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from benchmarks import grid
from benchmarks.tables import (
    ABLATION_VARIANTS,
    CURVE_VARIANTS,
    OPTION_ROWS,
    ROBUSTNESS_VARIANTS,
    comparison_table,
    cost_table,
    curve_points,
    curve_table,
    datasets_of,
    group_table,
    index,
    mean_std,
    progress_table,
    robustness_table,
    scaling_table,
    split_group_table,
    targets_table,
    variant_table,
)
from recbole_milk.atomic import atomic_write, write_text

ROBUSTNESS_FILE = "robustness.png"
CURVE_FILE = "missing_ratio_curve.png"
DETAILED = "tiktok"  # the dataset of the paper: ablations, robustness, curve, cost
# Rows of the option and optimiser tables that the comparison does not hold; they get their groups too.
GROUPED_EXTRA = (*grid.OPTION_VARIANTS, "MILK recommended dense Adam")
REPO = Path(__file__).resolve().parent.parent
REPRODUCE_SCRIPT = REPO / "benchmarks" / "reproduce.sh"
README_BEGIN = "<!-- benchmark results: written by `python -m benchmarks.run report --readme=README.md`; do not edit -->"
README_END = "<!-- end of benchmark results -->"

README_SETUP = """\
Three datasets. **TikTok** as the paper's authors preprocessed it (visual + acoustic features), on the reference
new-item split (5,368 warm, 671 valid and 671 test items) and masks of `../shared/data/tiktok` (FTMT: half of the
new items miss one modality; MTMT: also 30% of the warm items). **ml-100k-mm**, the embedded default (title, genre
and knowledge-graph modalities), split and masks drawn with split_seed 2023; it also runs the paper's 10/45/45
scenario. **synthetic** (`dataset_prep/synthetic.py` defaults: 6,000 users, 5,000 items, 60,000 interactions, a
strong and a weak 64-d modality over 16 known factors), split and masks drawn with split_seed 2023. Missing rows are
mean-imputed from warm rows; candidates are all new items; early stopping on valid NDCG@10 every 10 epochs, patience
3, at most 300 epochs; test at the best valid epoch. Seeds 2023-2027 vary model initialisation, negative sampling
and MILK's environment draws (the curve's masks follow the seed too, nested across ratios). "MILK" is the paper's
MILK as the authors ran it (sum reduction, the dataset's paper weights where the paper gives them: TikTok 50 /
0.5 / 0.1); "MILK recommended" adds `--preset=recommended` (properties/recommended/MILK.yaml, chosen on validation);
"w/o both" is MILK with both modules off, a content-only BPR. The nine baselines use their yaml defaults, 3 seeds,
at most 100 epochs; the two-stage ones read warm BPR embeddings exported once per split. The group ratio is the
mean missing-one group NDCG@20 over the mean complete one; the exposure ratio is the missing-one items' share of
all top-20 slots over their share of the candidates (1 = shown as often as their number says). Every run is its own
process with one torch thread, on a shared 2-core CPU machine.
"""


def _plans(records: List[Dict[str, Any]]) -> List[Tuple[str, grid.Profile]]:
    profiles: Dict[str, str] = {}
    for record in records:
        profiles.setdefault(record["dataset"], record.get("profile", "full"))
    return [(dataset, grid.PROFILES[profiles[dataset]]) for dataset in datasets_of(index(records))
            if profiles[dataset] in grid.PROFILES]


def sections(records: List[Dict[str, Any]]) -> List[Tuple[str, List[str]]]:
    """(heading, table lines) of every table, in reading order."""
    acc = index(records)
    robust, _ = robustness_table(acc, DETAILED, ROBUSTNESS_VARIANTS)
    out = [
        ("Recommended MILK against its targets (test, means over seeds)", targets_table(acc)),
        ("Three datasets, one table (test, mean ± std over seeds)", comparison_table(acc)),
        ("The missing-one group on validation and on test (means over the seeds that recorded both)",
         split_group_table(acc, ("MILK", "MILK recommended", grid.PATTERN_FLOOR, "w/o both", "DUIF"))),
        (f"Three modalities, the paper's {grid.THREE_WAY} scenario (ml-100k-mm)",
         comparison_table(acc, ("MILK", "MILK recommended", "w/o both"), (grid.THREE_WAY,))),
    ]
    for dataset in datasets_of(acc):
        out.append((f"Our options one at a time on MILK ({dataset}, FTMT)",
                    variant_table(acc, dataset, OPTION_ROWS, ("FTMT",), paired=True)))
    out += [
        ("Ablations (TikTok)", variant_table(acc, DETAILED, ABLATION_VARIANTS, ("FTMT", "FTFT"))),
        ("Robustness: relative NDCG@20 loss from FTFT to FTMT (TikTok, paired by seed)", robust),
        ("NDCG@20 against the share of new items missing a modality (TikTok; nested masks drawn per seed; every "
         "point over the same seeds)",
         curve_table(acc, DETAILED)),
        ("Imputation (TikTok)", variant_table(acc, DETAILED, ("MILK", "MILK zero-imputed"), ("FTMT", "MTMT"))),
        ("Optimiser of the user table: lazy Adam (default) against the authors' dense Adam (TikTok)",
         variant_table(acc, DETAILED, ("MILK", "MILK dense Adam", "MILK recommended", "MILK recommended dense Adam"),
                       ("FTMT", "MTMT"))),
    ]
    # Every overall row of the comparison has its groups beside it, on every dataset.
    out += [(f"Per missing-pattern group ({dataset}, test, mean ± std over seeds)",
             group_table(acc, dataset, CURVE_VARIANTS + (grid.PATTERN_FLOOR, *GROUPED_EXTRA, *grid.BASELINES)))
             for dataset in datasets_of(acc)]
    pattern_rows = ("MILK", "MILK recommended", "w/o both", "DUIF", grid.PATTERN_FLOOR)
    out.append(("Per missing pattern: which modality the missing-one items lack (TikTok, test, item_groups: "
                "pattern)", group_table(acc, DETAILED, pattern_rows, ("FTMT",), experiment="patterns")))
    out += [
        ("Cost (TikTok)", cost_table(acc, DETAILED)),
        ("Scaling: epoch time on the interactions duplicated with synthetic users (TikTok)",
         scaling_table(acc, DETAILED)),
        ("Grid progress", progress_table(records, _plans(records))),
    ]
    return out


def reproduce_commands() -> List[str]:
    """The script that produced the committed results, without its comment header."""
    lines = REPRODUCE_SCRIPT.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith(("#!", "set -"))]


def _save_figure(plt: Any, fig: Any, path: str) -> str:
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=120, format="png")
    plt.close(fig)
    return path


def draw_figures(records: List[Dict[str, Any]], out_dir: str) -> List[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('figures skipped: matplotlib is missing; install the bench extra: pip install ".[bench]"')
        return []
    acc = index(records)
    _, bars = robustness_table(acc, DETAILED, ROBUSTNESS_VARIANTS)
    files = []
    if bars:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        means = [100 * mean_std(v)[0] for _, v in bars]
        stds = [100 * mean_std(v)[1] for _, v in bars]
        ax.bar(range(len(bars)), means, yerr=stds, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(bars)), [name for name, _ in bars], rotation=20, ha="right")
        ax.set_ylabel("NDCG@20 loss FTFT → FTMT (%)")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title("Robustness on TikTok: relative NDCG@20 loss (mean ± std over seeds)")
        files.append(_save_figure(plt, fig, os.path.join(out_dir, ROBUSTNESS_FILE)))
    curves = {variant: curve_points(acc, DETAILED, variant) for variant in CURVE_VARIANTS}
    if any(len(points) > 1 for points in curves.values()):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for variant, points in curves.items():
            if points:
                ax.errorbar([x for x, _ in points], [mean_std(v)[0] for _, v in points],
                            yerr=[mean_std(v)[1] for _, v in points], marker="o", capsize=4, label=variant)
        ax.set_xlabel("share of new items missing a modality")
        ax.set_ylabel("test NDCG@20")
        ax.set_xticks(list(grid.CURVE_RATIOS))
        ax.legend()
        ax.set_title("TikTok: NDCG@20 against the missing-modality ratio (mean ± std)")
        files.append(_save_figure(plt, fig, os.path.join(out_dir, CURVE_FILE)))
    return files


def readme_section(records: List[Dict[str, Any]], figure_dir: str, commands: Sequence[str],
                   embedded: bool = False) -> str:
    """The README's "Results" section: setup, commands, the tables and the figures, from the same records.

    `embedded`: without the "## Results" heading and with table headings one level down, to sit under a
    README subsection (see splice_readme)."""
    parts = ([] if embedded else ["## Results", ""]) + [
        README_SETUP, "Reproduce (every step resumes where it stopped if killed):", "", "```bash", *commands,
        "```", ""]
    marks = "####" if embedded else "###"
    for heading, table in sections(records):
        parts += [f"{marks} {heading}", "", *(table or ["not run yet"]), ""]
        if heading.startswith("Robustness") and table:
            parts += [f"![robustness]({figure_dir}/{ROBUSTNESS_FILE})", ""]
        if heading.startswith("NDCG@20 against") and table:
            parts += [f"![missing-ratio curve]({figure_dir}/{CURVE_FILE})", ""]
    return "\n".join(parts)


def write_report(records: List[Dict[str, Any]], out_dir: str, commands: Sequence[str] = ()) -> List[str]:
    """Write results.md, readme_section.md and the figures into out_dir; return the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# Benchmark results", "",
             f"Generated by `python -m benchmarks.run report` from {len(records)} runs. Do not edit by hand.", ""]
    for heading, table in sections(records):
        lines += [f"## {heading}", ""] + (table or ["not run yet"]) + [""]
    path = os.path.join(out_dir, "results.md")
    write_text(path, "\n".join(lines))
    figure_dir = os.path.relpath(out_dir, REPO) if _inside(out_dir, str(REPO)) else out_dir
    section = os.path.join(out_dir, "readme_section.md")
    write_text(section, readme_section(records, figure_dir, commands))
    return [path, section] + draw_figures(records, out_dir)


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
