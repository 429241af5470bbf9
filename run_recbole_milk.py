"""Train and evaluate a model on the new-item protocol.

    python run_recbole_milk.py                                   # MILK on the embedded ml-100k-mm dataset
    python run_recbole_milk.py --model=BPR --dataset=tiktok --data_path=DATA --missing_setting=MTMT
    python run_recbole_milk.py --model=MILK --config_files="a.yaml b.yaml" --result_file=out/milk.json

Any other --key=value is a RecBole-style config override.
"""
import argparse
import json
import sys

from recbole_milk.atomic import write_json
from recbole_milk.cli import run_cli
from recbole_milk.compat import apply_numpy_aliases


def parse_args(argv):
    """Split the script's own options from the --key=value config overrides, which RecBole reads from sys.argv."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="MILK", help="plugin or RecBole model name (default MILK)")
    parser.add_argument("--dataset", "-d", default="ml-100k-mm", help="dataset name (default ml-100k-mm)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--result_file", default=None, help="write the run's result as JSON to this path")
    args, overrides = parser.parse_known_args(argv)
    bad = [item for item in overrides if not item.startswith("--") or "=" not in item]
    if bad:
        parser.error(f"unrecognised arguments {bad}: config overrides must look like --key=value")
    return args, overrides


def main(argv=None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = [sys.argv[0]] + overrides
    apply_numpy_aliases()
    from recbole_milk.quick_start import run_recbole_milk

    config_files = args.config_files.split() if args.config_files else None
    result = run_recbole_milk(model=args.model, dataset=args.dataset, config_file_list=config_files)
    print(json.dumps({key: result[key] for key in ("test_result", "test_result_by_group", "test_exposure_by_group")},
                     indent=2))
    if args.result_file:
        write_json(args.result_file, result, indent=2)
    return result


if __name__ == "__main__":
    run_cli(main)
