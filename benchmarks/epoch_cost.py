"""MILK's training epoch against RecBole's BPR epoch in the same process, and epoch time as users grow.

    python -m benchmarks.epoch_cost --dataset=tiktok --data_path=DATA --cold_item_file=S --missing_file=M
    python -m benchmarks.epoch_cost ... --scales=1,2,4,8 --epochs=3
    python -m benchmarks.epoch_cost ... --models='BPR;MILK;MILK:sparse_user_gradients=true'

Every model's trainer is built first; then their epochs alternate (BPR, MILK, BPR, MILK, ...), so load that comes
and goes on the machine falls on all of them alike, and the figure is the ratio of median epoch times. An epoch is
RecBole's `_train_epoch`: negative sampling, forward, backward and optimizer steps, on one torch thread. With
--scales, every user is duplicated N times (benchmarks/scaling.py), so an epoch holds N times the interactions;
"vs linear" is the epoch time divided by N times the x1 time (1.00 is linear).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import yaml
from recbole.utils import init_seed

from benchmarks.scaling import build_scaled, scaled_name
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.config import Config
from recbole_milk.data.utils import create_dataset, data_preparation
from recbole_milk.trainer import get_trainer
from recbole_milk.utils import get_model


def parse_model(spec: str) -> Tuple[str, str, Dict[str, Any]]:
    """'MILK:sparse_user_gradients=false' -> (label, model, overrides); values are read as YAML."""
    model, _, options = spec.partition(":")
    overrides = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        overrides[key] = yaml.safe_load(value)
    return spec, model, overrides


def build_trainer(model: str, dataset: str, base: Dict[str, Any], overrides: Dict[str, Any]) -> Tuple[Any, Any]:
    """(trainer, train loader) of one model, built as run_recbole_milk builds them."""
    config = Config(model=model, dataset=dataset, config_dict=dict(base, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    train_data = data_preparation(config, create_dataset(config))[0]
    init_seed(config["seed"], config["reproducibility"])
    network = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, network)
    return trainer, train_data


def epoch_seconds(trainers: Dict[str, Tuple[Any, Any]], epochs: int) -> Dict[str, List[float]]:
    """Seconds of each of `epochs` training epochs per model, the models' epochs interleaved."""
    seconds: Dict[str, List[float]] = {label: [] for label in trainers}
    for epoch in range(epochs):
        for label, (trainer, train_data) in trainers.items():
            trainer.model.train()
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch)
            seconds[label].append(time.perf_counter() - start)
    return seconds


def measure(dataset: str, base: Dict[str, Any], models: List[Tuple[str, str, Dict[str, Any]]],
            epochs: int) -> Dict[str, float]:
    """Median seconds per epoch of every model on `dataset` (the first epoch is a warm-up and not counted)."""
    trainers = {label: build_trainer(model, dataset, base, overrides) for label, model, overrides in models}
    seconds = epoch_seconds(trainers, epochs + 1)
    return {label: statistics.median(values[1:]) for label, values in seconds.items()}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--cold_item_file", default=None)
    parser.add_argument("--missing_file", default=None)
    parser.add_argument("--missing_setting", default="FTMT")
    parser.add_argument("--models", default="BPR;MILK", help="model specs joined by ';', the first is the reference")
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs per model, after one warm-up")
    parser.add_argument("--scales", default="1", help="user duplication factors, e.g. 1,2,4,8")
    parser.add_argument("--scratch", default="/tmp/recbole-milk-epoch-cost")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads command-line options too, and they would override ours
    apply_numpy_aliases()
    torch.set_num_threads(args.threads)
    models = [parse_model(spec) for spec in args.models.split(";")]
    base: Dict[str, Any] = {"missing_setting": args.missing_setting, "seed": 2023, "show_progress": False,
                            "checkpoint_dir": str(Path(args.scratch) / "saved"), "state": "WARNING"}
    if args.data_path:
        base["data_path"] = args.data_path
    for key in ("cold_item_file", "missing_file"):
        if getattr(args, key):
            base[key] = getattr(args, key)
    scales = [int(s) for s in args.scales.split(",")]
    results: Dict[int, Dict[str, float]] = {}
    for factor in scales:
        dataset, config = args.dataset, dict(base)
        if factor > 1:
            if not args.data_path:
                sys.exit("--scales above 1 need --data_path (the scaled copies are built from the prepared folder)")
            config["data_path"] = build_scaled(args.data_path, args.dataset, factor, str(Path(args.scratch) / "data"))
            dataset = scaled_name(args.dataset, factor)
        print(f"x{factor}: {args.epochs} epochs per model after a warm-up ...", flush=True)
        results[factor] = measure(dataset, config, models, args.epochs)
        reference = results[factor][models[0][0]]
        for label, seconds in results[factor].items():
            line = f"  {label:<40} {seconds:7.3f} s/epoch  {seconds / reference:5.2f}x {models[0][0]}"
            if 1 in results and factor > 1:
                line += f"  vs linear {seconds / (factor * results[1][label]):5.2f}"
            print(line, flush=True)



if __name__ == "__main__":
    main(sys.argv[1:])
