"""Faults: killed runs, diverging training, corrupt or half-written files, concurrent runs. Nothing is lost or
corrupted, and the next run resumes (resume_from) or starts clean."""
import glob
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures import toy_config
from reliability_support import (
    child_result,
    start_child,
    state_dicts_equal,
    training_toy,
    wait_until_ready,
)

from recbole_milk import atomic
from recbole_milk.atomic import write_json
from recbole_milk.data import embedded
from recbole_milk.data.dataset import NewItemDataset, default_cache_path
from recbole_milk.data.utils import create_dataset
from recbole_milk.options import ConfigError
from recbole_milk.quick_start import run_recbole_milk
from recbole_milk.trainer import TrainingDivergedError

COMPARED = ("best_valid_result", "test_result", "test_result_by_group", "epochs_trained")


@pytest.fixture
def toy(tmp_path):
    return training_toy(tmp_path / "data")


def resume_points(checkpoint_dir):
    return glob.glob(os.path.join(checkpoint_dir, "*.resume-*.pth"))


def temporaries(directory):
    return [p for p in Path(directory).rglob("*") if p.name.endswith(".tmp")]


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ----- a run killed mid-training -----

def test_a_run_killed_mid_training_leaves_loadable_files_and_resumes_bit_identical(toy, tmp_path):
    config = dict(toy, epochs=30, eval_step=1, save_dataset=True)
    killed_config = dict(config, checkpoint_dir=str(tmp_path / "killed" / "saved"))
    victim = start_child({"kind": "run", "model": "MILK", "config": killed_config}, tmp_path / "child", "killed")
    try:
        reference = run_recbole_milk("MILK", "toy", config_dict=config)  # meanwhile, the uninterrupted run here
        deadline = time.monotonic() + 120
        while not resume_points(killed_config["checkpoint_dir"]):
            assert victim.poll() is None, (tmp_path / "child" / "killed.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the run never wrote a resume point"
            time.sleep(0.01)
        time.sleep(0.2)
        assert victim.poll() is None, "the run finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()

    # Nothing half-written: every checkpoint and the dataset cache load completely.
    cache = default_cache_path(toy_config(killed_config))
    checkpoints = [p for p in glob.glob(os.path.join(killed_config["checkpoint_dir"], "*.pth")) if p != cache]
    (resume_file,) = resume_points(killed_config["checkpoint_dir"])
    for path in checkpoints:
        assert "state_dict" in torch.load(path, weights_only=False)
    point = torch.load(resume_file, weights_only=False)
    assert 0 <= point["epoch"] < 29 and not point["resume"]["stopped"]
    with open(cache, "rb") as handle:
        assert isinstance(pickle.load(handle), NewItemDataset)

    # Resumed in this process: the killed process's state carries the whole run, bit for bit.
    resumed = run_recbole_milk("MILK", "toy", config_dict=dict(killed_config, resume_from="latest"))
    for key in COMPARED:
        assert resumed[key] == reference[key], key
    assert resumed["saved_model_file"] in checkpoints  # the killed run's own best checkpoint, continued
    assert state_dicts_equal(resumed["saved_model_file"], reference["saved_model_file"])
    assert not resume_points(killed_config["checkpoint_dir"]) and not temporaries(tmp_path / "data")


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(toy):
    saved = Path(toy["checkpoint_dir"])
    saved.mkdir(parents=True)
    stem = "MILK-toy-x.pth"
    host = atomic._host()
    dead = saved / f".{stem}.{host}-{dead_pid()}-0123abcd.tmp"
    live = saved / f".{stem}.{host}-{os.getpid()}-0123abcd.tmp"
    elsewhere = saved / f".{stem}.{host}x-{dead_pid()}-0123abcd.tmp"  # another host's writer: not ours to judge
    for path in (dead, live, elsewhere):
        path.write_bytes(b"half a checkpoint")
    run_recbole_milk("MILK", "toy", config_dict=dict(toy, epochs=1, eval_step=1))
    assert not dead.exists() and live.exists() and elsewhere.exists()


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(target) as handle:
            handle.write(b"new, but only ha")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and not temporaries(tmp_path)


# ----- resume_from -----

def interrupt(monkeypatch, config, epoch=5):
    from recbole_milk import trainer as trainer_module

    train_epoch = trainer_module.NewItemTrainerMixin._train_epoch

    def crashing(self, train_data, epoch_idx, **kwargs):
        if epoch_idx == epoch:
            raise KeyboardInterrupt
        return train_epoch(self, train_data, epoch_idx, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.NewItemTrainerMixin, "_train_epoch", crashing)
        with pytest.raises(KeyboardInterrupt):
            run_recbole_milk("MILK", "toy", config_dict=config)
    (point,) = resume_points(config["checkpoint_dir"])
    return point


def test_without_resume_from_the_next_run_starts_clean(toy, monkeypatch):
    reference = run_recbole_milk("MILK", "toy", config_dict=toy)
    point = interrupt(monkeypatch, toy)
    clean = run_recbole_milk("MILK", "toy", config_dict=toy)
    assert clean["saved_model_file"] not in (reference["saved_model_file"], point)
    assert all(clean[key] == reference[key] for key in COMPARED)
    assert resume_points(toy["checkpoint_dir"]) == [point]  # the interrupted run can still be resumed later


def test_resume_latest_picks_only_unfinished_runs_with_the_same_options(toy, monkeypatch, caplog):
    interrupt(monkeypatch, dict(toy, learning_rate=0.01))
    with caplog.at_level("INFO"):
        result = run_recbole_milk("MILK", "toy", config_dict=dict(toy, resume_from="latest", state="INFO"))
    assert "found no unfinished run with these options" in caplog.text
    assert result["epochs_trained"] == toy["epochs"]
    assert len(resume_points(toy["checkpoint_dir"])) == 1  # the other run's point is left alone


def test_resume_from_an_explicit_path_continues_that_run(toy, monkeypatch):
    point = interrupt(monkeypatch, toy, epoch=5)
    best_before = torch.load(point, weights_only=False)["resume"]["best_model_file"]
    result = run_recbole_milk("MILK", "toy", config_dict=dict(toy, resume_from=point))
    assert os.path.basename(result["saved_model_file"]) == best_before
    assert result["epochs_trained"] == toy["epochs"] and not os.path.exists(point)
    best = torch.load(result["saved_model_file"], weights_only=False)
    assert best["best_valid_score"] == result["best_valid_score"]  # the best checkpoint is still the best


def test_resume_from_a_checkpoint_of_another_model_is_refused(toy):
    other = run_recbole_milk("BPR", "toy", config_dict=dict(toy, epochs=2))
    with pytest.raises(ConfigError, match=r"'resume_from'.*BPR run on toy, not MILK on toy"):
        run_recbole_milk("MILK", "toy", config_dict=dict(toy, resume_from=other["saved_model_file"]))


def test_an_unreadable_checkpoint_is_a_clear_error(toy, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ConfigError, match=r"Option 'resume_from': Checkpoint '.*broken\.pth' cannot be read.*resume_from: ~"):
        run_recbole_milk("MILK", "toy", config_dict=dict(toy, resume_from=str(broken)))


# ----- diverging training -----

def test_a_nan_loss_stops_with_an_actionable_message_and_keeps_the_last_good_state(toy):
    with pytest.raises(TrainingDivergedError) as caught:
        # One batch per epoch: the first epoch ends finite (and is evaluated), the second diverges.
        run_recbole_milk("MILK", "toy", config_dict=dict(toy, learning_rate=1e30, eval_step=1, train_batch_size=4096))
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)  # what RecBole raises, for callers that catch it
    assert "Training loss is nan at epoch" in message and "lower learning_rate (now 1e+30)" in message
    assert "invariance_weight=50.0" in message and "feature files" in message and "clip_grad_norm" in message
    (point,) = resume_points(toy["checkpoint_dir"])
    assert f"resume_from: {point}" in message
    state = torch.load(point, weights_only=False)["state_dict"]
    assert all(torch.isfinite(tensor).all() for tensor in state.values())


# ----- caches -----

def test_a_corrupt_dataset_cache_is_rebuilt(toy, caplog):
    config = toy_config(toy, save_dataset=True)
    built = create_dataset(config)
    cache = Path(default_cache_path(config))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # torn by a writer that did not rename
    with caplog.at_level("WARNING"):
        rebuilt = create_dataset(toy_config(toy, save_dataset=True))
    assert "cannot be read" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(rebuilt.item_role, built.item_role)
    with open(cache, "rb") as handle:
        assert torch.equal(pickle.load(handle).item_availability, built.item_availability)


def test_two_concurrent_runs_on_one_dataset_share_its_cache_safely(toy, tmp_path, monkeypatch):
    config = dict(toy, epochs=2, eval_step=1, save_dataset=True)
    go = tmp_path / "go"
    child = start_child({"kind": "run", "model": "MILK", "config": config, "repeat": 2, "wait_for": str(go)},
                        tmp_path / "child", "other")
    wait_until_ready(child, tmp_path / "child", "other")
    builds = []
    build = NewItemDataset.__init__
    monkeypatch.setattr(NewItemDataset, "__init__", lambda self, config: builds.append(1) or build(self, config))
    go.touch()  # both processes now build, save and reload the same cache at the same time
    here = [run_recbole_milk("MILK", "toy", config_dict=config) for _ in range(2)]
    there = child_result(child, tmp_path / "child", "other")
    runs = [{key: run[key] for key in COMPARED} for run in here] + [
        {key: run[key] for key in COMPARED} for run in there["runs"]]
    assert all(run == runs[0] for run in runs)
    files = {run["saved_model_file"] for run in here} | {run["saved_model_file"] for run in there["runs"]}
    assert len(files) == 4  # no two runs share a checkpoint
    # Each process built the dataset at most once (the first may load the other's cache); its second run loaded it.
    assert len(builds) <= 1 and there["dataset_builds"] <= 1 and len(builds) + there["dataset_builds"] >= 1
    with open(default_cache_path(toy_config(config)), "rb") as handle:
        assert isinstance(pickle.load(handle), NewItemDataset)
    assert not temporaries(tmp_path / "data")


def test_concurrent_writers_of_one_json_file_never_collide(tmp_path):
    target, errors = tmp_path / "split.json", []

    def write(writer):
        try:
            for round_ in range(50):
                write_json(str(target), {"writer": writer, "round": round_})
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and json.loads(target.read_text())["round"] == 49
    assert not temporaries(tmp_path)


def test_embedded_builders_in_separate_processes_leave_one_complete_dataset(tmp_path):
    from test_data_embedded import write_fake_ml100k

    source = write_fake_ml100k(tmp_path / "ml-100k")
    target = tmp_path / "cache" / "ml-100k-mm"
    go = tmp_path / "go"
    child = start_child({"kind": "build_embedded", "source": str(source), "target": str(target),
                         "wait_for": str(go)}, tmp_path / "child", "builder")
    wait_until_ready(child, tmp_path / "child", "builder")
    go.touch()
    embedded.build_ml100k_mm(target, source, title_dim=2, kg_dim=2)
    child_result(child, tmp_path / "child", "builder")
    assert embedded.is_built(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ml-100k-mm"]


def test_an_embedded_build_that_dies_before_the_rename_leaves_no_dataset(tmp_path, monkeypatch):
    from test_data_embedded import write_fake_ml100k

    from recbole_milk.atomic import temporary_path

    source = write_fake_ml100k(tmp_path / "ml-100k")
    target = tmp_path / "cache" / "ml-100k-mm"

    def die(*args, **kwargs):
        raise OSError("killed before the rename")

    with monkeypatch.context() as patch:
        patch.setattr(embedded, "save_npy", die)
        with pytest.raises(OSError, match="before the rename"):
            embedded.build_ml100k_mm(target, source, title_dim=2, kg_dim=2)
    assert not target.exists() and not list(target.parent.iterdir())
    # The staging folder of a SIGKILLed builder is never mistaken for the dataset, and the next build removes it.
    dead = temporary_path(target)
    dead = dead.with_name(dead.name.replace(f"-{os.getpid()}-", "-999999999-"))
    dead.mkdir()
    (dead / "ml-100k-mm.inter").write_text("user_id:token\n")
    embedded.build_ml100k_mm(target, source, title_dim=2, kg_dim=2)
    assert not dead.exists()
    assert embedded.is_built(target)


def test_removing_an_empty_folder_that_another_process_removed_or_filled_is_no_error(tmp_path):
    from recbole_milk.atomic import remove_empty_folder

    assert not remove_empty_folder(tmp_path / "gone")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "run").mkdir()
    assert not remove_empty_folder(tmp_path / "full") and (tmp_path / "full").is_dir()
    (tmp_path / "empty").mkdir()
    assert remove_empty_folder(tmp_path / "empty") and not (tmp_path / "empty").exists()
