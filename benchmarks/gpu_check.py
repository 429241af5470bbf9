"""One GPU run of MILK on TikTok FTMT to early stopping: seconds per epoch, seconds per evaluation, peak GPU memory.

    python -m benchmarks.gpu_check --data_path=/work/data --out=benchmarks/out/gpu_check [--nproc=2]

Run by benchmarks/gpu_check.sh. Without a CUDA device it stops at once with exit status 2 and says so; it never falls
back to the CPU. The figures go to OUT/gpu_check-<nproc>.json and are printed as one line of JSON.
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

SHARED = "/work/shared/data/tiktok"
USER_ERROR_STATUS = 2


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default="/work/data", help="folder holding the converted tiktok dataset")
    parser.add_argument("--cold_item_file", default=f"{SHARED}/reference_split.json")
    parser.add_argument("--missing_file", default=f"{SHARED}/reference_missing.json")
    parser.add_argument("--out", default="benchmarks/out/gpu_check", help="folder for logs, checkpoints, figures")
    parser.add_argument("--nproc", type=int, default=1, help="processes (one GPU each; 2 runs a nccl job)")
    parser.add_argument("--epochs", type=int, default=300, help="upper bound; early stopping ends the run sooner")
    return parser.parse_args(argv)


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from benchmarks.cell import evaluation_seconds
    from recbole_milk.quick_start import run_recbole_milk

    folder = os.path.join(os.path.abspath(args.out), f"nproc{args.nproc}")
    options = {
        "data_path": args.data_path, "cold_item_file": args.cold_item_file, "missing_file": args.missing_file,
        "missing_setting": "FTMT", "epochs": args.epochs, "use_gpu": True,
        "gpu_id": ",".join(str(index) for index in range(args.nproc)), "nproc": args.nproc,
        "checkpoint_dir": os.path.join(folder, "saved"), "log_dir": os.path.join(folder, "log"),
        "tensorboard_dir": os.path.join(folder, "tb"), "show_progress": False, "save_dataset": False,
    }
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run_recbole_milk("MILK", "tiktok", config_dict=options, saved=True)
    wall = time.perf_counter() - start
    evals = evaluation_seconds(options["log_dir"])
    figures = {
        "nproc": args.nproc, "world_size": result["world_size"], "backend": result["backend"],
        "device": str(result["config"]["device"]), "gpu": torch.cuda.get_device_name(0),
        "epochs_trained": result["epochs_trained"], "seconds_per_epoch": result["train_seconds_per_epoch"],
        "seconds_per_evaluation": sum(evals) / len(evals) if evals else None, "evaluations": len(evals),
        # This process's peak; with nproc > 1 the ranks run in their own processes, so it is not measured here.
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if args.nproc == 1 else None,
        "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved() / 2 ** 20 if args.nproc == 1 else None,
        "wall_seconds": wall, "best_valid_result": result["best_valid_result"], "test_result": result["test_result"],
    }
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(os.path.abspath(args.out), f"gpu_check-{args.nproc}.json"), "w", encoding="utf-8") as out:
        json.dump(figures, out, indent=2)
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    found = cuda_devices()
    if found == 0:
        print("error: gpu_check needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); "
              "nothing was run.", file=sys.stderr)
        return USER_ERROR_STATUS
    if found < args.nproc:
        print(f"error: --nproc={args.nproc} needs {args.nproc} GPUs; {found} visible.", file=sys.stderr)
        return USER_ERROR_STATUS
    for path in (args.cold_item_file, args.missing_file, os.path.join(args.data_path, "tiktok")):
        if not os.path.exists(path):
            print(f"error: {path} not found (see benchmarks/README.md for the TikTok data).", file=sys.stderr)
            return USER_ERROR_STATUS
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
