"""Shared helpers of the reliability suite: small datasets, hostile rewrites of them, and child processes."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from fixtures import write_toy_dataset

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parent / "run_child.py"
# Every metric at full precision, so that "identical" means bit-identical and not equal after rounding.
EXACT = {"metric_decimal_place": 15}


def training_toy(root: Path, **overrides: Any) -> Dict[str, Any]:
    """A dataset big enough for several batches per epoch (60 users, 80 items, 2 modalities), MTMT masks."""
    config = write_toy_dataset(root, n_users=60, n_items=80, inter_per_user=10)
    config.update(EXACT, epochs=8, eval_step=2, stopping_step=100, train_batch_size=64, missing_setting="MTMT")
    config.update(overrides)
    return config


def folder(config: Dict[str, Any]) -> Path:
    return Path(config["data_path"]) / config["dataset"]


def inter_rows(config: Dict[str, Any]) -> List[List[str]]:
    lines = (folder(config) / f"{config['dataset']}.inter").read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


def rewrite_inter(config: Dict[str, Any], rewrite: Callable[[List[List[str]]], List[List[str]]]) -> None:
    path = folder(config) / f"{config['dataset']}.inter"
    header = path.read_text().splitlines()[0]
    path.write_text("\n".join([header] + ["\t".join(row) for row in rewrite(inter_rows(config))]) + "\n")


def feature_path(config: Dict[str, Any], modality: str) -> Path:
    return folder(config) / config["modalities"][modality]


def state_dicts_equal(first: str, second: str) -> bool:
    a = torch.load(first, weights_only=False)["state_dict"]
    b = torch.load(second, weights_only=False)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def start_child(job: Dict[str, Any], workdir: Path, name: str) -> subprocess.Popen:
    """Run tests/reliability/run_child.py on `job` in its own process, one thread, in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    job = dict(job, out=str(workdir / f"{name}.json"))
    job_file = workdir / f"{name}.job.json"
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    log = open(workdir / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, str(CHILD), str(job_file)], cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_until_ready(process: subprocess.Popen, workdir: Path, name: str, timeout: float = 120) -> None:
    """Wait until the child has imported everything and waits for its start signal."""
    deadline = time.monotonic() + timeout
    while not (workdir / f"{name}.json.ready").exists():
        assert process.poll() is None, (workdir / f"{name}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"child {name} never got ready"
        time.sleep(0.01)


def child_result(process: subprocess.Popen, workdir: Path, name: str, timeout: float = 120) -> Dict[str, Any]:
    assert process.wait(timeout=timeout) == 0, (workdir / f"{name}.log").read_text()[-3000:]
    return json.loads((workdir / f"{name}.json").read_text())
