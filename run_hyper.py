"""Tune a model with RecBole's HyperTuning on the plugin's new-item pipeline.

    python run_hyper.py --model=MILK --params_file=properties/hyper/MILK.hyper --algo=random --max_evals=20
    python run_hyper.py --model=BPR --params_file=my.hyper --algo=exhaustive --output_file=bpr_tuning.txt
    python run_hyper.py --model=MILK --tool=Ray --cpus=8 --algo=random --max_evals=20   # 8 trials at a time
    python run_hyper.py --model=MILK --tool=Ray --address=HEAD:6379                     # an existing Ray cluster

Needs the `tune` extra (pip install ".[tune]"). Any other --key=value is a fixed config override. Tuning selects
on the validation split only; test results are reported alongside but never used for selection.

--tool=Hyperopt (the default) runs the trials one after another in this process. --tool=Ray runs them in parallel
on Ray (ray is installed with RecBole): on a local Ray instance of --cpus CPUs (default: all), each trial with
--cpus_per_trial torch threads (default 1), or on the Ray cluster at --address (recbole_milk installed on its
nodes). Both read the same params file and write the same results table and best parameters.
"""
import argparse
import os
import sys

from recbole_milk.cli import run_cli
from recbole_milk.compat import apply_numpy_aliases
from recbole_milk.errors import ConfigError

ALGORITHMS = ("exhaustive", "random", "bayes")
TOOLS = ("Hyperopt", "Ray")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MILK")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--params_file", default=None,
                        help="hyperopt search space (default properties/hyper/<model>.hyper)")
    parser.add_argument("--config_files", default=None, help="space-separated fixed yaml files")
    parser.add_argument("--algo", default="exhaustive", choices=ALGORITHMS)
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random and bayes")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without gain")
    parser.add_argument("--output_file", default="hyper_result.txt", help="where the results table is written")
    parser.add_argument("--tool", default="Hyperopt", help="Hyperopt (trials one by one) or Ray (in parallel)")
    parser.add_argument("--cpus", type=int, default=None, help="Ray: CPUs of the local Ray instance (default all)")
    parser.add_argument("--cpus_per_trial", type=int, default=1, help="Ray: CPUs (torch threads) per trial")
    parser.add_argument("--address", default=None, help="Ray: address of an existing cluster (default: local)")
    args, overrides = parser.parse_known_args(argv)
    bad = [item for item in overrides if not item.startswith("--") or "=" not in item]
    if bad:
        parser.error(f"unrecognised arguments {bad}: config overrides must look like --key=value")
    return args, overrides


def default_params_file(model: str) -> str:
    from recbole_milk.config import properties_dir

    return str(properties_dir() / "hyper" / f"{model}.hyper")


def tool_name(value: str) -> str:
    """The --tool value as RecBole spells it (case does not matter)."""
    for tool in TOOLS:
        if value.lower() == tool.lower():
            return tool
    raise ConfigError(f"--tool={value} is not one of {', '.join(TOOLS)}")


def main(argv=None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    tool = tool_name(args.tool)
    sys.argv = [sys.argv[0]] + overrides
    apply_numpy_aliases()
    try:
        import hyperopt  # noqa: F401  (HyperTuning imports it lazily; fail early with a clear message)
        from recbole.trainer import HyperTuning
    except ImportError as error:
        raise ConfigError(f"run_hyper.py needs the tune extra: pip install \".[tune]\" ({error})") from error
    from recbole_milk.quick_start import objective_function

    params_file = args.params_file or default_params_file(args.model)
    if not os.path.isfile(params_file):
        raise ConfigError(f"params file {params_file} not found: pass --params_file=PATH "
                          "(lines like `align_weight choice [0.05,0.5]`)")

    def objective(config_dict, config_file_list):
        config_dict = dict(config_dict or {}, model=args.model, dataset=args.dataset)
        return objective_function(config_dict, config_file_list, saved=True)

    config_files = args.config_files.split() if args.config_files else None
    tuner = HyperTuning(objective, algo=args.algo, early_stop=args.early_stop, max_evals=args.max_evals,
                        params_file=params_file, fixed_config_file_list=config_files)
    if tool == "Ray":
        from recbole_milk.parallel_tuning import run_on_ray

        run_on_ray(tuner, {"model": args.model, "dataset": args.dataset}, config_files, overrides, args.early_stop,
                   cpus=args.cpus, cpus_per_trial=args.cpus_per_trial, address=args.address)
        if tuner.best_params is None:
            raise ConfigError("no trial finished on Ray: nothing to report")
    else:
        tuner.run()
    tuner.export_result(output_file=args.output_file)
    print("best params:", tuner.best_params)
    print("best result:", tuner.params2result[tuner.params2str(tuner.best_params)])
    return tuner


if __name__ == "__main__":
    run_cli(main)
