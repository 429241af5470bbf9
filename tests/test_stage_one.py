"""Stage 1 of the two-stage models: trained by the run itself when no folder is given, cached, reused."""
import pytest
from fixtures import write_toy_dataset

from recbole_milk.pretrained import META_FILE, read_cf_folder
from recbole_milk.quick_start import run_recbole_milk

QUICK = {"epochs": 2, "eval_step": 1, "pretrain_epochs": 3}


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data", n_users=30, n_items=40)


def test_a_run_without_a_folder_trains_stage_one_once_and_later_runs_reuse_it(toy, tmp_path):
    first = run_recbole_milk("DropoutNet", "toy", config_dict=dict(toy, **QUICK))
    folder = first["config"]["pretrained_cf_dir"]
    assert folder.startswith(toy["checkpoint_dir"]) and (tmp_path / folder / META_FILE).is_file()
    meta, users, _ = read_cf_folder(folder)
    assert meta["model"] == "BPR" and meta["epochs_trained"] == 3 and users.shape[1] == 64
    written = (tmp_path / folder / META_FILE).stat().st_mtime_ns

    second = run_recbole_milk("Heater", "toy", config_dict=dict(toy, **QUICK))
    assert second["config"]["pretrained_cf_dir"] == folder
    assert (tmp_path / folder / META_FILE).stat().st_mtime_ns == written  # reused, not retrained


def test_stage_one_is_keyed_by_the_split_and_its_own_options(toy):
    base = run_recbole_milk("DropoutNet", "toy", config_dict=dict(toy, **QUICK))["config"]["pretrained_cf_dir"]
    longer = run_recbole_milk("DropoutNet", "toy", config_dict=dict(toy, **dict(QUICK, pretrain_epochs=4)))
    other_split = run_recbole_milk("DropoutNet", "toy", config_dict=dict(toy, **QUICK, split_seed=7))
    assert len({base, longer["config"]["pretrained_cf_dir"], other_split["config"]["pretrained_cf_dir"]}) == 3


def test_a_cached_stage_one_trains_stage_two_exactly_as_the_same_folder_given_explicitly(toy):
    automatic = run_recbole_milk("GAR", "toy", config_dict=dict(toy, **QUICK, hidden_sizes=[16],
                                                                  generator_hidden_sizes=[8]))
    explicit = run_recbole_milk("GAR", "toy", config_dict=dict(toy, **QUICK, hidden_sizes=[16],
                                                                 generator_hidden_sizes=[8],
                                                                 pretrained_cf_dir=automatic["config"]["pretrained_cf_dir"]))
    assert automatic["test_result"] == explicit["test_result"]
    assert automatic["best_valid_result"] == explicit["best_valid_result"]
