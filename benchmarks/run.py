"""Benchmark runner: a grid of (variant x missing setting x seed) runs on any prepared dataset, resumable.

    python -m benchmarks.run run --profile=quick                      # smoke test on the embedded ml-100k-mm
    python -m benchmarks.run run --profile=full --dataset=tiktok --data_path=/tmp/data \\
        --cold_item_file=../shared/data/tiktok/reference_split.json \\
        --missing_file=../shared/data/tiktok/reference_missing.json --results=benchmarks/results/results.jsonl
    python -m benchmarks.run run --profile=multi --dataset=synthetic --data_path=/tmp/data \
        --results=benchmarks/results/synthetic.jsonl
    python -m benchmarks.run report --results=benchmarks/results/tiktok.jsonl,benchmarks/results/synthetic.jsonl \
        --readme=README.md
    python -m benchmarks.run forget --blocks=cost,scaling ...   # drop those records; the next run re-measures them

Every cell runs in its own process through run_recbole_milk. Its record is appended to the results file as soon as
it finishes, and cells already there are skipped, so a killed grid resumes where it stopped. `run` ends with a
report: markdown tables and PNG figures next to the results file.
"""
import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks import grid, scaling
from benchmarks.results import append_result, done_keys, forget_results, read_results
from recbole_milk.atomic import write_json

REPO = Path(__file__).resolve().parent.parent
SPLIT_SEED = 2023  # one split and one set of simulated masks for every cell; seeds vary model init and sampling


def data_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """Dataset options shared by every cell of the grid."""
    overrides: Dict[str, Any] = {"split_seed": SPLIT_SEED}
    if args.data_path:
        overrides["data_path"] = os.path.abspath(args.data_path)
    for key in ("cold_item_file", "missing_file"):
        if getattr(args, key):
            overrides[key] = os.path.abspath(getattr(args, key))
    return overrides


@functools.lru_cache(maxsize=None)
def needs_pretrained_cf(model: str) -> bool:
    """Whether `model` is a two-stage model (a TwoStageRecommender), which trains on pre-trained warm CF
    embeddings: the grid exports them once and shares the folder between its cells."""
    from recbole_milk.model.abstract_recommender import TwoStageRecommender
    from recbole_milk.utils import get_model

    return issubclass(get_model(model), TwoStageRecommender)


def pretrained_cf_folder(args: argparse.Namespace) -> Path:
    """The grid's warm CF embeddings: one folder per dataset, data options and stage-1 config."""
    settings = {**data_overrides(args), **grid.PROFILES[args.profile].pretrained_cf, "dataset": args.dataset,
                "config_files": args.config_files}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(args.scratch) / "pretrained_cf" / f"{args.dataset}-{digest}"


def ensure_pretrained_cf(args: argparse.Namespace) -> Optional[str]:
    """Export the warm CF embeddings of the grid's split once (stage 1); the folder, or None if the export failed.

    The export writes its folder atomically, so a folder with meta.json is complete and is reused by later cells,
    by a resumed grid and by a second runner. The BPR checkpoint that meta.json names stays in <folder>.work/saved.
    """
    folder = pretrained_cf_folder(args)
    if (folder / "meta.json").exists():
        return str(folder)
    work = folder.parent / f"{folder.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overrides = {**data_overrides(args), **grid.PROFILES[args.profile].pretrained_cf, "show_progress": False,
                 "log_dir": str(work / "log"), "tensorboard_dir": str(work / "log_tensorboard"),
                 "checkpoint_dir": str(work / "saved")}
    command = [sys.executable, str(REPO / "dataset_prep" / "export_cf_embeddings.py"), f"--dataset={args.dataset}",
               f"--output={folder}"]
    if args.config_files:
        command.append("--config_files=" + " ".join(os.path.abspath(path) for path in args.config_files.split()))
    command += [f"--{key}={value}" for key, value in overrides.items()]
    print(f"  stage 1 of the two-stage baselines: warm BPR embeddings -> {folder}", flush=True)
    start = time.time()
    with open(work / "output.txt", "w") as output:
        code = subprocess.run(command, cwd=work, stdout=output, stderr=subprocess.STDOUT,
                              env=cell_env(args)).returncode
    if code != 0 or not (folder / "meta.json").exists():
        print(f"  stage 1 FAILED ({code}); see {work}/output.txt", flush=True)
        return None
    print(f"  stage 1 done in {time.time() - start:.0f}s", flush=True)
    return str(folder)


def cell_spec(cell: grid.Cell, args: argparse.Namespace, scratch: Path,
              pretrained_cf_dir: Optional[str] = None) -> Dict[str, Any]:
    """Model, dataset and the complete config_dict of one cell; its logs and checkpoints go to `scratch`."""
    dataset = args.dataset
    config = data_overrides(args)
    config.update(dict(cell.overrides))
    if pretrained_cf_dir:
        config["pretrained_cf_dir"] = pretrained_cf_dir
    if cell.setting.startswith("x"):  # scaling rows read a duplicated copy of the dataset
        factor = int(cell.setting[1:])
        if factor > 1:
            if not args.data_path:
                raise SystemExit("the scaling rows need --data_path (a prepared dataset folder to duplicate)")
            config["data_path"] = os.path.abspath(scaling.build_scaled(
                args.data_path, args.dataset, factor, str(Path(args.scratch) / "data")))
            dataset = scaling.scaled_name(args.dataset, factor)
    if config.get("missing_file", "unset") is None:
        del config["missing_file"]  # curve points and the 10/45/45 scenario simulate their masks
    if grid.masks_vary_with_seed(cell.setting):
        config["split_seed"] = cell.seed  # the split is the grid's (cold_item_file); the masks are this seed's
    config.update({
        "seed": cell.seed,
        "show_progress": False,
        "log_dir": str(scratch / "log"),
        "tensorboard_dir": str(scratch / "log_tensorboard"),
        "checkpoint_dir": str(scratch / "saved"),
        "split_export_file": str(scratch / "split.json"),
    })
    config_files = [os.path.abspath(path) for path in args.config_files.split()] if args.config_files else None
    return {"model": cell.model, "dataset": dataset, "config_dict": config, "config_files": config_files}


def cell_env(args: argparse.Namespace) -> Dict[str, str]:
    """Environment of a cell or tuning process: the repository importable, a fixed torch thread count.

    A fixed thread count keeps timings comparable and stops a cell from oversubscribing a small, shared machine
    (two 2-thread torch processes on 2 cores ran 6x slower per epoch than one).
    """
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))


def code_version() -> str:
    """The checkout's commit (with "+dirty" for uncommitted changes), so each record says which code produced it.

    Committed results (benchmarks/results/) do not count as changes: the runner itself appends to them."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_one(cell: grid.Cell, args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Run `cell` in a fresh process; its record, or None if the process failed (the failure is logged)."""
    pretrained_cf_dir = None
    if needs_pretrained_cf(cell.model):
        pretrained_cf_dir = ensure_pretrained_cf(args)
        if pretrained_cf_dir is None:
            return None
    scratch = Path(args.scratch) / "cells" / cell.name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    spec = cell_spec(cell, args, scratch, pretrained_cf_dir)
    write_json(scratch / "spec.json", spec, indent=2)
    out_file = scratch / "measurements.json"
    start = time.time()
    with open(scratch / "output.txt", "w") as output:
        try:
            # The cell's working directory is its scratch folder: RecBole writes ./log_tensorboard relative to it,
            # and runs sharing one directory (a tuner beside the grid) trip over each other's folders.
            process = subprocess.run([sys.executable, "-m", "benchmarks.cell", str(scratch / "spec.json"),
                                      str(out_file)], cwd=scratch, stdout=output, stderr=subprocess.STDOUT,
                                     timeout=args.cell_timeout, env=cell_env(args))
            code = process.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0 or not out_file.exists():
        tail = (scratch / "output.txt").read_text(errors="replace").splitlines()[-5:]
        print(f"  FAILED ({code}) after {time.time() - start:.0f}s; see {scratch}/output.txt", *tail, sep="\n    ",
              flush=True)
        return None
    measurements = json.loads(out_file.read_text())
    # Checkpoints are only needed inside the run; the log and spec stay for inspection.
    shutil.rmtree(scratch / "saved", ignore_errors=True)
    shutil.rmtree(scratch / "log_tensorboard", ignore_errors=True)
    record = {"dataset": cell.dataset, "experiment": cell.experiment, "variant": cell.variant,
              "setting": cell.setting, "seed": cell.seed, "model": cell.model, "run_dataset": spec["dataset"],
              "profile": args.profile,
              "overrides": dict(cell.overrides), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "host_cpus": os.cpu_count(), "threads": args.threads, "code_version": code_version()}
    record.update(measurements)
    return record


def selected_cells(args: argparse.Namespace) -> List[grid.Cell]:
    """The cells of --blocks (default all), narrowed to --seeds and --variants when given."""
    blocks = args.blocks.split(",") if args.blocks else None
    cells = grid.expand(grid.PROFILES[args.profile], blocks, args.dataset)
    if args.seeds:
        # A budgeted first pass (say three seeds of every block) that a later run without --seeds completes.
        cells = [cell for cell in cells if cell.seed in args.seeds]
    if args.variants:
        cells = [cell for cell in cells if cell.variant in args.variants]
    return cells


def command_run(args: argparse.Namespace) -> int:
    cells = selected_cells(args)
    done = done_keys(args.results)
    todo = [cell for cell in cells if cell.key not in done]
    print(f"{args.profile} profile on {args.dataset}: {len(cells)} cells, {len(cells) - len(todo)} already in "
          f"{args.results}, {len(todo)} to run", flush=True)
    failures = 0
    for index, cell in enumerate(todo, 1):
        if args.dry_run:
            print(f"  would run {cell.key}")
            continue
        if cell.key in done_keys(args.results):
            print(f"[{index}/{len(todo)}] {cell.key}: recorded meanwhile by another runner, skipped", flush=True)
            continue
        print(f"[{index}/{len(todo)}] {cell.experiment} | {cell.variant} | {cell.setting} | seed {cell.seed}",
              flush=True)
        record = run_one(cell, args)
        if record is None:
            failures += 1
            continue
        written = append_result(args.results, record)
        test = record["test_result"]
        print(f"  done in {record['wall_seconds']:.0f}s, {record['epochs_trained']} epochs: "
              f"NDCG@20 {test.get('ndcg@20', float('nan')):.4f} Recall@20 {test.get('recall@20', float('nan')):.4f}"
              + ("" if written else " (already recorded by another runner; kept the first)"), flush=True)
    if not args.dry_run and not args.no_report:
        command_report(args)
    return 1 if failures else 0


def command_forget(args: argparse.Namespace) -> int:
    """Drop the recorded cells of --blocks (narrowed by --seeds and --variants), so that the next `run` measures
    them again (e.g. timings on a quiet machine)."""
    if not args.blocks:
        raise SystemExit("forget needs --blocks=NAME[,NAME...]: the blocks whose recorded cells to drop")
    keys = {cell.key for cell in selected_cells(args)}
    removed = forget_results(args.results, keys)
    print(f"removed {removed} records of {args.blocks} from {args.results}; `run` measures them again")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from benchmarks.report import (
        readme_section,
        reproduce_commands,
        splice_readme,
        write_report,
    )

    files = [path for path in args.results_files]
    out_dir = args.out or os.path.dirname(os.path.abspath(files[0]))
    records = [record for path in files for record in read_results(path)]
    commands = reproduce_commands()
    written = write_report(records, out_dir, commands=commands)
    if args.readme:
        readme_dir = os.path.dirname(os.path.abspath(args.readme))
        figure_dir = os.path.relpath(out_dir, readme_dir)
        splice_readme(args.readme, readme_section(records, figure_dir, commands, embedded=True))
        written.append(args.readme)
    print("report:", *written, sep="\n  ")
    return 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report", "forget"))
    parser.add_argument("--profile", choices=sorted(grid.PROFILES), default="quick")
    parser.add_argument("--dataset", default=None, help="default: tiktok for full, synthetic for multi, "
                                                        "ml-100k-mm for quick")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's/plugin's)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files for every cell")
    parser.add_argument("--cold_item_file", default=None, help="fixed new-item split for every cell")
    parser.add_argument("--missing_file", default=None, help="fixed masks for the FTMT/MTMT cells")
    parser.add_argument("--results", default=None, help="results .jsonl (default benchmarks/out/<profile>/"
                                                        "results.jsonl); report: several, comma-separated")
    parser.add_argument("--scratch", default=None, help="per-cell logs and synthetic datasets (default benchmarks/out/<profile>)")
    parser.add_argument("--out", default=None, help="report folder (default: the results file's folder)")
    parser.add_argument("--readme", default=None, help="report: also write the results into this README's benchmark "
                                                       "block (between its marker lines)")
    parser.add_argument("--blocks", default=None, help="comma-separated blocks of the profile to run (default all)")
    parser.add_argument("--seeds", type=lambda text: [int(seed) for seed in text.split(",")], default=None,
                        help="comma-separated seeds: run only the cells of these seeds (default every seed)")
    parser.add_argument("--variants", type=lambda text: [name.strip() for name in text.split(",")], default=None,
                        help="comma-separated variants (e.g. 'MILK,w/o both'): run only their cells (default all)")
    parser.add_argument("--cell_timeout", type=float, default=None, help="seconds before a cell is killed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell (default 1)")
    parser.add_argument("--dry_run", action="store_true", help="list the cells that would run")
    parser.add_argument("--no_report", action="store_true", help="skip the report at the end of `run`")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or grid.PROFILES[args.profile].default_dataset
    args.scratch = os.path.abspath(args.scratch or str(REPO / "benchmarks" / "out" / args.profile))
    args.results_files = [os.path.abspath(path) for path in (args.results or "").split(",") if path] or [
        str(Path(args.scratch) / "results.jsonl")]
    args.results = args.results_files[0]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    commands = {"run": command_run, "report": command_report, "forget": command_forget}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
