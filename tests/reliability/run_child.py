"""One job of the reliability suite in its own process: python run_child.py JOB.json (written by start_child).

Jobs: run (train and test a model, possibly twice in a row), build_embedded (build ml-100k-mm from a source folder).
A job imports what it needs, writes <out>.ready, and if asked waits for a file to appear before it starts, so that
the test can start the real work of several processes at the same moment.
"""
import json
import sys
import time
from pathlib import Path


def prepare_run(job: dict):
    import torch

    from recbole_milk.data.dataset import NewItemDataset
    from recbole_milk.quick_start import run_recbole_milk

    torch.set_num_threads(1)  # as the tests' own process: the same arithmetic in every process
    builds = []
    build = NewItemDataset.__init__

    def counting_build(self, config):  # counts datasets built from the files, not loaded from the cache
        builds.append(1)
        build(self, config)

    NewItemDataset.__init__ = counting_build

    def run() -> dict:
        runs = []
        for _ in range(job.get("repeat", 1)):
            result = run_recbole_milk(job["model"], job["config"]["dataset"], config_dict=job["config"])
            runs.append({key: result[key] for key in ("best_valid_result", "test_result", "test_result_by_group",
                                                       "epochs_trained", "saved_model_file")})
        return {"runs": runs, "dataset_builds": len(builds)}

    return run


def prepare_build_embedded(job: dict):
    from recbole_milk.data.embedded import build_ml100k_mm

    def run() -> dict:
        build_ml100k_mm(job["target"], job["source"], title_dim=2, kg_dim=2)
        return {}

    return run


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    run = {"run": prepare_run, "build_embedded": prepare_build_embedded}[job["kind"]](job)
    Path(job["out"] + ".ready").touch()
    if job.get("wait_for"):
        while not Path(job["wait_for"]).exists():
            time.sleep(0.005)
    Path(job["out"]).write_text(json.dumps(run()))


if __name__ == "__main__":
    main()
