"""Multi-process training on torch.distributed: real gloo processes on the CPU.

A process trains on its share of every batch (disjoint shares that cover the epoch), gradients are averaged, the
evaluation is gathered so its metrics are those of one process, only rank 0 writes, and a failing process ends the
run with its error instead of leaving the others waiting.
"""
import json
import time
from collections import Counter

import pytest
import torch
from fixtures import toy_config, write_toy_dataset

from recbole_milk import distributed
from recbole_milk.data.shards import batch_share, shard_step, sharded
from recbole_milk.data.utils import create_dataset, scoped_data_preparation
from recbole_milk.errors import ConfigError
from recbole_milk.launch import RankFailedError, free_port, run_processes
from recbole_milk.quick_start import load_data_and_model, run_recbole_milk
from recbole_milk.trainer import get_trainer

# Far above what the tests take: a run that ends within it was ended by the launcher, not by a collective timing out.
PATIENCE_S = 600


@pytest.fixture
def toy(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=60, n_items=70, n_modalities=2)
    config.update(epochs=4, eval_step=2, ddp_timeout=PATIENCE_S)
    return config


# ----- each process's share of the epoch -----

@pytest.mark.parametrize("size,world", [(1, 2), (7, 2), (8, 3), (10, 4)])
def test_the_shares_of_a_batch_are_disjoint_and_cover_it(size, world):
    batch = list(range(100, 100 + size))
    shares = [batch_share(batch, rank, world) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == batch
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("samples,step,world", [(101, 10, 2), (1001, 100, 4), (20, 10, 2), (9, 4, 3)])
def test_no_process_ever_gets_an_empty_batch(samples, step, world):
    chosen = shard_step(samples, step, world)
    assert chosen <= step and (samples % chosen == 0 or samples % chosen >= world)
    assert chosen == step or 0 < samples % step < world


def _epoch_positives(loader):
    dataset = loader._dataset
    return [Counter(zip(batch[dataset.uid_field].tolist(), batch[dataset.iid_field].tolist())) for batch in loader]


@pytest.mark.parametrize("awkward_last_batch", [False, True])
def test_the_processes_shares_are_disjoint_and_are_the_one_process_epoch(toy, awkward_last_batch):
    config = toy_config(toy, "BPR", train_batch_size=64)
    train_data, _ = scoped_data_preparation(config, create_dataset(config))
    if awkward_last_batch:  # one sample left for the last batch: the batches shrink a little so both get one
        config["train_batch_size"] = len(train_data._dataset) - 1
    loaders = [sharded(type(train_data))(config, train_data._dataset, train_data._sampler, shuffle=True, rank=rank,
                                         world=2) for rank in range(2)]
    one_process = type(train_data)(config, train_data._dataset, train_data._sampler, shuffle=True)
    shares = [_epoch_positives(loader) for loader in loaders]
    assert len(shares[0]) == len(shares[1]) and all(batch for share in shares for batch in share)
    covered = Counter()
    for first, second in zip(*shares):
        assert not set(first) & set(second)
        covered.update(first + second)
    epoch = Counter(zip(train_data._dataset.inter_feat[config["USER_ID_FIELD"]].tolist(),
                        train_data._dataset.inter_feat[config["ITEM_ID_FIELD"]].tolist()))
    assert covered == epoch
    if not awkward_last_batch:  # the same batches as one process, dealt out
        assert [a + b for a, b in zip(*shares)] == _epoch_positives(one_process)


# ----- gradients -----

def _average_in_rank(local_rank, port):
    distributed.init_process_group("gloo", local_rank, 2, "localhost", port, PATIENCE_S)
    dense = torch.nn.Parameter(torch.zeros(2, 3))
    dense.grad = torch.full((2, 3), float(local_rank + 1))
    half_used = torch.nn.Parameter(torch.zeros(3))
    half_used.grad = torch.ones(3) * 4 if local_rank == 1 else None
    unused = torch.nn.Parameter(torch.zeros(2))
    table = torch.nn.Embedding(5, 2, sparse=True)
    rows = torch.tensor([0, 2]) if local_rank == 0 else torch.tensor([2, 4, 4])
    table(rows).sum().mul(local_rank + 1).backward()
    distributed.average_gradients([dense, half_used, unused, table.weight], [table.weight])
    mine = (dense.grad, half_used.grad, unused.grad, table.weight.grad.is_sparse, table.weight.grad.to_dense())
    return distributed.gather_objects(mine)


def test_gradients_are_averaged_across_processes_dense_sparse_and_missing():
    both = run_processes(_average_in_rank, 2, (free_port(),))
    for dense, half_used, unused, sparse, table in both:
        assert torch.equal(dense, torch.full((2, 3), 1.5))
        assert torch.equal(half_used, torch.full((3,), 2.0))  # (0 + 4) / 2: the process without a gradient adds 0
        assert unused is None  # no process had one: the optimiser skips it, as in one process
        assert sparse  # lazy Adam still gets sparse rows
        assert torch.equal(table, torch.tensor([[0.5, 0.5], [0, 0], [1.5, 1.5], [0, 0], [2.0, 2.0]]))


# ----- whole runs -----

def test_two_processes_train_milk_and_their_evaluation_is_that_of_one_process(toy, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import run_recbole_milk

    result_file = tmp_path / "milk.json"
    run_recbole_milk.main(["--model=MILK", f"--dataset={toy['dataset']}", f"--data_path={toy['data_path']}",
                           f"--checkpoint_dir={toy['checkpoint_dir']}", f"--log_dir={toy['log_dir']}",
                           f"--tensorboard_dir={toy['tensorboard_dir']}", "--show_progress=False", "--state=INFO",
                           f"--modalities={json.dumps(toy['modalities'])}", "--epochs=4", "--eval_step=2",
                           "--nproc=2", f"--result_file={result_file}"])
    result = json.loads(result_file.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["epochs_trained"] == 4
    # Written once: one checkpoint, one artefact, no resume point left, one log file that states the world size.
    checkpoint = Path(result["saved_model_file"])
    assert sorted(p.name for p in checkpoint.parent.iterdir() if p.is_file()) == sorted(
        [checkpoint.name, Path(result["artifact_file"]).name])
    logs = list((Path(toy["log_dir"]) / "MILK").iterdir())
    assert len(logs) == 1 and "world size 2, backend gloo" in logs[0].read_text()
    assert len(list(Path(toy["tensorboard_dir"]).iterdir())) == 1

    config, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    alone = trainer.evaluate(test_data, load_best_model=False)
    assert {key: float(value) for key, value in alone.items()} == result["test_result"]
    assert trainer.last_group_result == result["test_result_by_group"]
    assert trainer.last_group_exposure == result["test_exposure_by_group"]


def test_two_processes_train_to_the_metrics_of_one_within_seed_noise(tmp_path):
    data = write_toy_dataset(tmp_path / "data", n_users=200, n_items=120, n_modalities=2, inter_per_user=12)
    data.update(epochs=12, eval_step=3, ddp_timeout=PATIENCE_S, learning_rate=0.01, save_dataset=True)
    scores = {}
    for label, options in {"one": {}, "one, other seed": {"seed": 7}, "two": {"nproc": 2}}.items():
        result = run_recbole_milk("BPR", data["dataset"], config_dict=dict(data, **options), saved=False)
        scores[label] = result["test_result"]["ndcg@10"]
    noise = abs(scores["one"] - scores["one, other seed"])
    assert abs(scores["two"] - scores["one"]) <= 2 * noise + 0.02, scores


def test_a_failing_process_ends_the_whole_run_with_its_error(toy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Rank 0 alone writes the split, and fails; rank 1 is then waiting for it in the trainer's first collective.
    start = time.monotonic()
    with pytest.raises(RankFailedError, match="local rank 0.*(NotADirectory|FileExists)Error"):
        run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, nproc=2,
                                                                  split_export_file=str(blocker / "split.json")))
    assert time.monotonic() - start < PATIENCE_S / 4


def test_a_user_error_in_one_process_is_raised_as_itself(toy, tmp_path):
    not_a_checkpoint = tmp_path / "empty.pth"
    not_a_checkpoint.write_bytes(b"")
    # Only rank 0 reads checkpoints; the others wait for what it sends.
    with pytest.raises(ConfigError, match="resume_from"):
        run_recbole_milk("BPR", toy["dataset"], config_dict=dict(toy, nproc=2, resume_from=str(not_a_checkpoint)))


@pytest.mark.parametrize("options,expected", [
    ({"nproc": 0}, "Option 'nproc' = 0 is invalid"),
    ({"nproc": 2, "ddp_backend": "nccl"}, "nccl needs CUDA"),
    ({"nproc": 2, "ddp_backend": "mpi"}, "Option 'ddp_backend' = 'mpi' is invalid"),
    ({"nproc": 2, "world_size": 4}, "Option 'port' = ~ is invalid"),
    ({"nproc": 2, "world_size": 3, "offset": 2, "port": 29500}, "do not fit"),
    ({"nproc": 2, "enable_scaler": True}, "enable_scaler"),
])
def test_distributed_options_are_checked_before_any_process_starts(toy, options, expected):
    with pytest.raises(ConfigError, match=expected):
        toy_config(toy, "BPR", **options)


def test_several_processes_train_general_recommenders_only(toy):
    with pytest.raises(ConfigError, match="general recommenders only"):
        toy_config(toy, "FM", nproc=2)


LAUNCHER = """
import os, sys, time
sys.path[:0] = [{tests!r}, {repo!r}]
from recbole_milk.launch import run_processes

def sleeper(local_rank, folder):
    open(os.path.join(folder, f"rank{{local_rank}}.pid"), "w").write(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    run_processes(sleeper, 2, ({folder!r},))
"""


def test_the_processes_end_when_the_launcher_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER.format(tests=str(tests), repo=str(tests.parent), folder=str(tmp_path)))
    launcher = subprocess.Popen([sys.executable, str(script)])
    pid_files = [tmp_path / f"rank{rank}.pid" for rank in range(2)]
    deadline = time.monotonic() + 120
    while not all(path.exists() and path.read_text() for path in pid_files) and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [int(path.read_text()) for path in pid_files]
    launcher.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must end its processes
    launcher.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for init to reap it counts as ended
            return stat.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors
