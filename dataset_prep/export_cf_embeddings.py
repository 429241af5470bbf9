"""Stage 1 of the two-stage baselines (DropoutNet, Heater, GAR, GoRec), run explicitly: pre-train warm CF
embeddings with BPR and export them. A two-stage run without `pretrained_cf_dir` does this itself; this script is
for sharing one folder between runs, or exporting a BPR trained with other options.

BPR runs through the plugin's pipeline, so it sees exactly the split a later baseline run sees: give this script
the same dataset, data and split options (data_path, config files, seed / split_seed, cold_item_ratio or
cold_item_file, filtering, and eval_scopes / warm_holdout_ratio when the baseline run holds warm interactions out for
its warm and all scopes). It trains on warm items only (warm positives, warm negatives) for `epochs` epochs
without validation or early stopping (ranking new items says nothing about warm CF quality), then writes OUTPUT/ with
user_embeddings.npy, item_embeddings.npy and meta.json (format in recbole_milk/pretrained.py). Rows of items
that are not warm are zero.

    python dataset_prep/export_cf_embeddings.py --dataset=tiktok --data_path=DATA \
        --config_files=DATA/tiktok/tiktok.yaml --epochs=100 --output=saved/cf-tiktok
    python run_recbole_milk.py --model=DropoutNet --dataset=tiktok --data_path=DATA \
        --config_files=DATA/tiktok/tiktok.yaml --pretrained_cf_dir=saved/cf-tiktok

Any other --key=value is a config override for the BPR run (e.g. --embedding_size=64, --epochs=100).
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    import recbole_milk  # noqa: F401
except ImportError:  # run from a source checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_milk.cli import run_cli
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.data.roles import ROLE_WARM
from recbole_milk.stage_one import export_bpr

SPLIT_OPTIONS = ("seed", "split_seed", "cold_item_ratio", "cold_valid_share", "cold_item_file", "data_path",
                 "user_inter_num_interval", "item_inter_num_interval", "eval_scopes", "warm_holdout_ratio")


def export_cf_embeddings(output: str, dataset: str, config_file_list: Optional[List[str]] = None,
                         config_dict: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train warm BPR on `dataset`'s new-item split and write its embeddings to `output`; return a summary."""
    apply_numpy_aliases()
    from recbole_milk.quick_start import load_data_and_model, run_recbole_milk

    # No validation: early stopping on new-item ranking would stop BPR at random; train the configured epochs.
    run_config = {**(config_dict or {}), "eval_step": 0}
    result = run_recbole_milk(model="BPR", dataset=dataset, config_file_list=config_file_list,
                              config_dict=run_config, saved=True)
    config, model, data, _, _, _ = load_data_and_model(result["saved_model_file"])
    meta = {
        "model": "BPR",
        "dataset": config["dataset"],
        "epochs_trained": result["epochs_trained"],
        "checkpoint": os.path.abspath(result["saved_model_file"]),
        "split": {key: config[key] for key in SPLIT_OPTIONS},
    }
    folder = export_bpr(model, data, output, meta)
    return {"output": str(folder), "users": data.user_num - 1, "items": data.item_num - 1,
            "warm_items": int((data.item_role == ROLE_WARM).sum()),
            "embedding_size": int(model.user_embedding.weight.shape[1]), "epochs_trained": result["epochs_trained"]}


def parse_args(argv: List[str]):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", required=True, help="dataset name, as for run_recbole_milk.py")
    parser.add_argument("--output", "-o", required=True, help="folder to write (replaced atomically if it exists)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files, as for the baseline run")
    args, overrides = parser.parse_known_args(argv)
    bad = [item for item in overrides if not item.startswith("--") or "=" not in item]
    if bad:
        parser.error(f"unrecognised arguments {bad}: config overrides must look like --key=value")
    if any(item.startswith("--eval_step=") for item in overrides):
        parser.error("--eval_step cannot be set here: the export trains BPR for --epochs epochs without validation "
                     "(new-item ranking says nothing about warm CF quality); remove it")
    return args, overrides


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    # RecBole reads --key=value overrides from sys.argv.
    sys.argv = [sys.argv[0]] + overrides
    config_files = args.config_files.split() if args.config_files else None
    summary = export_cf_embeddings(args.output, args.dataset, config_files)
    print(f"Wrote warm BPR embeddings of {summary['users']} users and {summary['items']} items "
          f"({summary['warm_items']} warm; the others are zero rows), size {summary['embedding_size']}, "
          f"{summary['epochs_trained']} epochs, to {summary['output']}.\n"
          f"Use them with --pretrained_cf_dir={summary['output']} and the same data and split options.")
    return summary


if __name__ == "__main__":
    run_cli(main)
