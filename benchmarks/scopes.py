"""New, warm and all-item rankings of the same runs: models x seeds with eval_scopes [new, warm, all], one table.

    python -m benchmarks.scopes run --dataset=tiktok --data_path=DATA --results=benchmarks/results/scopes-tiktok.jsonl
    python -m benchmarks.scopes run --dataset=ml-100k-mm --seeds=2023 --epochs=2     # a smoke test
    python -m benchmarks.scopes report --dataset=tiktok --results=benchmarks/results/scopes-tiktok.jsonl

Each (model, seed) is one run of run_recbole_milk in its own process (benchmarks/run.py's runner), recorded in the
results file as soon as it ends; recorded runs are skipped, so a killed run resumes. The split and the masks are
the grid's (split_seed 2023, or --cold_item_file / --missing_file); the warm holdout is drawn from split_seed too,
so every model and seed ranks the same held-out warm interactions. The table (markdown, printed and written to
--out) gives per model and scope the mean ± std over seeds of NDCG@K and Recall@K, and the new items' share of the
all scope's top-K slots next to their share of its candidates.
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks import grid, run
from benchmarks.results import append_result, done_keys, read_results
from benchmarks.tables import _table, fmt
from recbole_milk.atomic import write_text

EXPERIMENT = "scopes"
SCOPES = ["new", "warm", "all"]
MODELS = ["MILK", "DUIF", "VBPR", "CLCRec", "BPR", "LightGCN"]
SEEDS = grid.BASELINE_SEEDS


def cells(args: argparse.Namespace) -> List[grid.Cell]:
    """One cell per (model, seed), seeds varying slowest, every one with eval_scopes [new, warm, all]."""
    overrides: Dict[str, Any] = {"eval_scopes": SCOPES, "missing_setting": args.setting}
    overrides.update({key: getattr(args, key) for key in ("epochs", "eval_step") if getattr(args, key) is not None})
    frozen = tuple(sorted((key, value if not isinstance(value, list) else tuple(value))
                          for key, value in overrides.items()))
    return [grid.Cell(args.dataset, EXPERIMENT, model, args.setting, seed, model, frozen)
            for seed in args.seeds for model in args.models]


def scope_table(records: List[Dict[str, Any]], dataset: str, setting: str, k: int = 20,
                models: Optional[List[str]] = None) -> List[str]:
    """Markdown lines: per model, NDCG@k and Recall@k of every scope and the new items' share of the all scope's top
    k (mean ± std over seeds), with the seeds counted."""
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        if (record.get("experiment"), record.get("dataset"), record.get("setting")) == (EXPERIMENT, dataset, setting):
            runs.setdefault(record["variant"], []).append(record)
    header = ["model", "seeds"] + [f"{scope} {name}@{k}" for name in ("NDCG", "Recall") for scope in SCOPES]
    header += [f"new-item share of the all top-{k}"]
    rows = []
    for model in models or sorted(runs):
        found = runs.get(model, [])
        if not found:
            continue
        row = [model, str(len(found))]
        for metric in (f"ndcg@{k}", f"recall@{k}"):
            for scope in SCOPES:
                row.append(fmt([r["test_result_by_scope"][scope][metric] for r in found
                                if metric in r.get("test_result_by_scope", {}).get(scope, {})]))
        shares = [r["test_new_item_share"] for r in found if r.get("test_new_item_share")]
        candidate = f" (candidates {shares[0]['candidate_share']:.2f})" if shares else ""
        row.append(fmt([share[f"new_item_share@{k}"] for share in shares], digits=3) + candidate)
        rows.append(row)
    title = (f"Test accuracy on {dataset} ({setting}) in the three scopes: new items among new items, held-out warm "
             f"interactions among warm items, and both in one ranking over every item (mean ± std over seeds).")
    return [title, ""] + _table(header, rows)


def write_table(args: argparse.Namespace) -> str:
    lines = scope_table(read_results(args.results), args.dataset, args.setting, args.k, args.models)
    text = "\n".join(lines) + "\n"
    write_text(args.out, text)
    print(text + f"\nwritten to {args.out}", flush=True)
    return text


def command_run(args: argparse.Namespace) -> int:
    two_stage = [model for model in args.models if run.needs_pretrained_cf(model)]
    if two_stage:
        raise SystemExit(f"benchmarks.scopes runs single-stage models only; {two_stage} need pre-trained CF "
                         "embeddings: run them through benchmarks.run.")
    todo = [cell for cell in cells(args) if cell.key not in done_keys(args.results)]
    print(f"{EXPERIMENT} on {args.dataset}: {len(args.models) * len(args.seeds)} runs, {len(todo)} to run", flush=True)
    failures = 0
    for index, cell in enumerate(todo, 1):
        print(f"[{index}/{len(todo)}] {cell.variant} | seed {cell.seed}", flush=True)
        record = run.run_one(cell, args)
        if record is None:
            failures += 1
            continue
        append_result(args.results, record)
        print("  " + ", ".join(f"{scope} NDCG@{args.k} {record['test_result_by_scope'][scope][f'ndcg@{args.k}']:.4f}"
                               for scope in SCOPES), flush=True)
    write_table(args)
    return 1 if failures else 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: the plugin's)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files for every run")
    parser.add_argument("--cold_item_file", default=None, help="fixed new-item split for every run")
    parser.add_argument("--missing_file", default=None, help="fixed masks for every run")
    parser.add_argument("--setting", default="FTMT", choices=("FTFT", "FTMT", "MTMT"))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the models' own)")
    parser.add_argument("--eval_step", type=int, default=None, help="epochs between validations (default 10)")
    parser.add_argument("--k", type=int, default=20, help="the table's cut-off, one of topk (default 20)")
    parser.add_argument("--results", default=None, help="results .jsonl (default benchmarks/out/scopes/results.jsonl)")
    parser.add_argument("--scratch", default=None, help="per-run logs (default benchmarks/out/scopes)")
    parser.add_argument("--out", default=None, help="markdown table (default: scopes-<dataset>.md next to the results)")
    parser.add_argument("--cell_timeout", type=float, default=None, help="seconds before a run is killed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    args = parser.parse_args(argv)
    args.models = [model for model in args.models.split(",") if model]
    args.seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    args.profile = EXPERIMENT  # what benchmarks.run records as the profile of each run
    args.scratch = os.path.abspath(args.scratch or str(run.REPO / "benchmarks" / "out" / EXPERIMENT))
    args.results = os.path.abspath(args.results or str(Path(args.scratch) / "results.jsonl"))
    args.out = os.path.abspath(args.out or str(Path(args.results).parent / f"scopes-{args.dataset}.md"))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "report":
        write_table(args)
        return 0
    return command_run(args)


if __name__ == "__main__":
    sys.exit(main())
