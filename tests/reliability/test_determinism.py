"""The same seed on CPU gives bit-identical metrics and weights: across two runs, and across a run that was
interrupted and resumed (resume_from) versus one that was not."""
import glob
import os

import pytest
from reliability_support import state_dicts_equal, training_toy

from recbole_milk import trainer as trainer_module
from recbole_milk.quick_start import run_recbole_milk

COMPARED = ("best_valid_score", "best_valid_result", "test_result", "test_result_by_group", "epochs_trained")


class Crash(Exception):
    """Stands in for a crash (power cut, OOM kill) at the start of an epoch."""


@pytest.fixture
def toy(tmp_path):
    # No validation: RecBole then checkpoints after every epoch, so the compared checkpoint is the last state and a
    # difference anywhere in training shows (a best-model checkpoint from before the crash would hide it).
    return training_toy(tmp_path / "data", eval_step=0)


def crash_at(monkeypatch, epoch):
    train_epoch = trainer_module.NewItemTrainerMixin._train_epoch

    def crashing(self, train_data, epoch_idx, **kwargs):
        if epoch_idx == epoch:
            raise Crash(f"crash at epoch {epoch}")
        return train_epoch(self, train_data, epoch_idx, **kwargs)

    monkeypatch.setattr(trainer_module.NewItemTrainerMixin, "_train_epoch", crashing)


def interrupted_then_resumed(monkeypatch, model, config, epoch):
    with monkeypatch.context() as patch:
        crash_at(patch, epoch)
        with pytest.raises(Crash):
            run_recbole_milk(model, config["dataset"], config_dict=config)
    return run_recbole_milk(model, config["dataset"], config_dict=dict(config, resume_from="latest"))


def assert_same_run(first, second):
    for key in COMPARED:
        assert first[key] == second[key], key
    assert state_dicts_equal(first["saved_model_file"], second["saved_model_file"])


@pytest.mark.parametrize("model, options", [("MILK", {}), ("MILK", {"resample_envs": False, "cyclic_shift": False}),
                                            ("BPR", {})], ids=["MILK", "MILK-fixed-envs", "BPR"])
def test_same_seed_gives_bit_identical_runs(toy, model, options):
    config = dict(toy, **options)
    first = run_recbole_milk(model, "toy", config_dict=config)
    second = run_recbole_milk(model, "toy", config_dict=config)
    assert first["saved_model_file"] != second["saved_model_file"]
    assert_same_run(first, second)


def test_another_seed_gives_another_run(toy):
    first = run_recbole_milk("MILK", "toy", config_dict=toy)
    other = run_recbole_milk("MILK", "toy", config_dict=dict(toy, seed=7))
    assert not state_dicts_equal(first["saved_model_file"], other["saved_model_file"])


@pytest.mark.parametrize("model, crash_epoch", [("MILK", 3), ("MILK", 6), ("BPR", 5)])
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(toy, monkeypatch, model, crash_epoch):
    uninterrupted = run_recbole_milk(model, "toy", config_dict=toy)
    resumed = interrupted_then_resumed(monkeypatch, model, toy, crash_epoch)
    assert_same_run(uninterrupted, resumed)
    assert not glob.glob(os.path.join(toy["checkpoint_dir"], "*.resume-*.pth"))  # finished runs keep no resume point


def test_a_resumed_run_with_lazy_adam_on_users_is_bit_identical(toy, monkeypatch):
    config = dict(toy, sparse_user_gradients=True)
    uninterrupted = run_recbole_milk("MILK", "toy", config_dict=config)
    resumed = interrupted_then_resumed(monkeypatch, "MILK", config, 3)
    assert_same_run(uninterrupted, resumed)


def test_resuming_without_the_random_streams_would_not_be_identical(toy, monkeypatch):
    # The control that shows the test above can fail: restore everything but the random streams.
    uninterrupted = run_recbole_milk("MILK", "toy", config_dict=toy)
    monkeypatch.setattr(trainer_module, "restore_random_state", lambda state, model: None)
    resumed = interrupted_then_resumed(monkeypatch, "MILK", toy, 3)
    assert not state_dicts_equal(uninterrupted["saved_model_file"], resumed["saved_model_file"])


def test_a_run_that_had_already_stopped_early_resumes_to_the_same_result(toy, monkeypatch):
    config = dict(toy, epochs=40, eval_step=1, stopping_step=1)
    uninterrupted = run_recbole_milk("MILK", "toy", config_dict=config)
    assert uninterrupted["epochs_trained"] < 40  # early stopping ended it
    # Crash right after the evaluation that stopped it, before fit() returned and removed the resume point.
    remove = trainer_module.NewItemTrainerMixin._remove_resume_point
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.NewItemTrainerMixin, "_remove_resume_point",
                      lambda self: (_ for _ in ()).throw(Crash("after the last evaluation")))
        with pytest.raises(Crash):
            run_recbole_milk("MILK", "toy", config_dict=config)
    assert trainer_module.NewItemTrainerMixin._remove_resume_point is remove
    resumed = run_recbole_milk("MILK", "toy", config_dict=dict(config, resume_from="latest"))
    assert_same_run(uninterrupted, resumed)
