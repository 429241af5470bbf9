"""Run one benchmark cell in this process and write its measurements as JSON.

    python -m benchmarks.cell SPEC.json OUT.json

SPEC holds model, dataset, config_dict and config_files. The run goes through run_recbole_milk, the quick-start
function users call. The runner starts one process per cell, so peak RSS is this run's own and a crash or a kill
ends only this cell.
"""
import glob
import json
import os
import re
import resource
import sys
import time
from typing import Any, Dict, List, Optional

EVAL_TIME = re.compile(r"evaluating\s*\S*\s*\[\S*time\S*:\s*([0-9.]+)s")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def evaluation_seconds(log_dir: str) -> List[float]:
    """Seconds of each validation pass, read from the run's RecBole log ("epoch N evaluating [time: X s, ...]")."""
    seconds = []
    for path in sorted(glob.glob(os.path.join(log_dir, "**", "*.log"), recursive=True)):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = EVAL_TIME.search(ANSI.sub("", line))
                if match:
                    seconds.append(float(match.group(1)))
    return seconds


def training_interactions(split_file: Optional[str], inter_file: str) -> Optional[int]:
    """Interactions of warm items (the training set), from the exported split and the .inter file."""
    if not split_file or not os.path.exists(split_file) or not os.path.exists(inter_file):
        return None
    import pandas as pd

    with open(split_file, encoding="utf-8") as handle:
        warm = {str(token) for token in json.load(handle)["warm"]}
    inter = pd.read_csv(inter_file, sep="\t", dtype=str)
    item_column = next(column for column in inter.columns if column.split(":")[0] == "item_id")
    return int(inter[item_column].isin(warm).sum())


# The record names the cell's model and dataset itself (a scaled dataset runs under another name).
NOT_RECORDED = ("config", "saved_model_file", "artifact_file", "model", "dataset")


def run_cell(spec: Dict[str, Any]) -> Dict[str, Any]:
    from recbole_milk.quick_start import run_recbole_milk

    start = time.perf_counter()
    result = run_recbole_milk(model=spec["model"], dataset=spec["dataset"], config_file_list=spec.get("config_files"),
                              config_dict=spec["config_dict"], saved=True)
    wall = time.perf_counter() - start
    config = result["config"]
    evals = evaluation_seconds(config["log_dir"])
    inter_file = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    n_train = training_interactions(config.get("split_export_file"), inter_file)
    per_epoch = result["train_seconds_per_epoch"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # Every figure the run reports goes into the record, so a metric added to the result file reaches the tables
    # without touching this list; only the config, the paths inside the cell's (deleted) scratch
    # and the names the record has from its cell stay out.
    record = {key: value for key, value in result.items() if key not in NOT_RECORDED}
    record.update({
        "train_seconds_per_epoch": per_epoch,
        "eval_seconds_mean": sum(evals) / len(evals) if evals else None,
        "evaluations": len(evals),
        "train_interactions": n_train,
        "interactions_per_second": n_train / per_epoch if n_train and per_epoch else None,
        "wall_seconds": wall,
        # ru_maxrss is in KiB on Linux: the peak resident set of this process, i.e. of this run alone.
        "peak_rss_mb": usage.ru_maxrss / 1024,
        # CPU seconds of the whole run (loading, training, evaluation): less sensitive than wall time to other
        # jobs on a shared machine, whose load is recorded beside it.
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_average_1m": os.getloadavg()[0],
    })
    return record


def main(argv: List[str]) -> None:
    from recbole_milk.atomic import write_json

    if len(argv) != 2:
        raise SystemExit("usage: python -m benchmarks.cell SPEC.json OUT.json")
    spec_file, out_file = argv
    with open(spec_file, encoding="utf-8") as handle:
        spec = json.load(handle)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv; the spec is the whole config
    measurements = run_cell(spec)
    write_json(out_file, measurements)


if __name__ == "__main__":
    main(sys.argv[1:])
