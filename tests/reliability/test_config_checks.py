"""Bad options fail before any data is read or any model trained, with an error naming the key, the bad value and
the allowed values."""
import math

import numpy as np
import pytest
from fixtures import write_toy_dataset

from recbole_milk.config import Config
from recbole_milk.data.dataset import DataError, NewItemDataset
from recbole_milk.options import ConfigError
from recbole_milk.quick_start import run_recbole_milk

NAN = float("nan")

# (model, key, bad value, text of the allowed range the message must show)
BAD_OPTIONS = [
    ("MILK", "reg_weight", -1e-4, "[0.0, inf)"),
    ("MILK", "reg_weight", NAN, "[0.0, inf)"),
    ("MILK", "invariance_weight", -50.0, "[0.0, inf)"),
    ("MILK", "invariance_weight", NAN, "[0.0, inf)"),
    ("MILK", "invariance_weight", math.inf, "[0.0, inf)"),
    ("MILK", "align_weight", -0.05, "[0.0, inf)"),
    ("MILK", "align_weight", NAN, "[0.0, inf)"),
    ("MILK", "dirichlet_alpha", 0.0, "(0.0, inf)"),
    ("MILK", "dirichlet_alpha", -0.1, "(0.0, inf)"),
    ("MILK", "dirichlet_alpha", NAN, "(0.0, inf)"),
    ("MILK", "embedding_size", 0, "an integer > 0"),
    ("MILK", "embedding_size", -64, "an integer > 0"),
    ("MILK", "embedding_size", 63.5, "an integer > 0"),
    ("MILK", "env_loss_reduction", "max", "one of sum, mean"),
    ("BPR", "missing_setting", "FTXX", "one of FTFT, FTMT, MTMT"),
    ("BPR", "imputation", "median", "one of mean, zero"),
    ("BPR", "candidate_pool", "everything", "one of all_new, split_new"),
    ("BPR", "cold_item_ratio", 0.0, "(0.0, 1.0)"),
    ("BPR", "cold_item_ratio", 1.0, "(0.0, 1.0)"),
    ("BPR", "cold_item_ratio", NAN, "(0.0, 1.0)"),
    ("BPR", "cold_valid_share", 1.5, "(0.0, 1.0)"),
    ("BPR", "epochs", -3, "an integer > 0"),
    ("BPR", "epochs", 0, "an integer > 0"),
    ("MILK", "fusion", "median", "one of all, available"),
    ("MILK", "missing_modality", "mean", "one of imputed, learned, cross_modal"),
    ("MILK", "extractor_hidden_sizes", [0], "a list of positive integers"),
    ("DUIF", "modality_dropout", 1.0, "[0.0, 1.0)"),
    ("DUIF", "score_calibration", "yes", "one of none, pattern"),
    ("DropoutNet", "pretrain_epochs", 0, "an integer > 0"),
]


def config_without_data(tmp_path, model, **options):
    # The dataset folder does not exist: a check that passes this point has not needed any data.
    return Config(model=model, config_dict={"data_path": str(tmp_path / "no-data"), "dataset": "absent",
                                             "modalities": {"visual": "v.npy", "acoustic": "a.npy"}, **options})


@pytest.mark.parametrize("model, key, value, allowed", BAD_OPTIONS, ids=lambda v: str(v))
def test_bad_option_fails_at_config_time_naming_key_value_and_range(tmp_path, model, key, value, allowed):
    with pytest.raises(ConfigError) as caught:
        config_without_data(tmp_path, model, **{key: value})
    message = str(caught.value)
    assert f"'{key}'" in message and repr(value) in message and allowed in message


@pytest.mark.parametrize("modalities, expected", [
    (None, r"'modalities' = None is invalid for model MILK: it must map at least 2 .*has 0\)"),
    ({"visual": "visual_feat.npy"}, r"'modalities' = \{'visual': .* MILK: it must map at least 2 .*has 1\)"),
    ({}, r"'modalities' = \{\} is invalid: it must map modality names to feature files"),
], ids=["none", "one", "empty"])
def test_milk_with_fewer_than_two_modalities_fails_at_config_time(tmp_path, modalities, expected):
    with pytest.raises(ConfigError, match=expected):
        config_without_data(tmp_path, "MILK", modalities=modalities)


def test_a_single_modality_is_fine_for_a_model_that_does_not_fuse(tmp_path):
    config = config_without_data(tmp_path, "BPR", modalities={"visual": "visual_feat.npy"})
    assert list(config["modalities"]) == ["visual"]


def test_a_bad_option_stops_a_run_before_it_writes_anything(tmp_path):
    toy = write_toy_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match="dirichlet_alpha"):
        run_recbole_milk("MILK", "toy", config_dict=dict(toy, dirichlet_alpha=-1.0))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["toy"]  # no log, checkpoint or cache folder


@pytest.mark.parametrize("value", ["/no/such/checkpoint.pth", 3, True])
def test_resume_from_must_be_latest_or_an_existing_file(tmp_path, value):
    with pytest.raises(ConfigError, match=r"'resume_from' = .*latest"):
        config_without_data(tmp_path, "MILK", resume_from=value)


@pytest.mark.parametrize("ratio, share, empty", [(0.02, 0.5, "test"), (0.02, 0.99, "test"), (0.3, 0.001, "valid"),
                                                  (0.98, 0.5, "warm")])
def test_a_split_leaving_no_warm_or_no_new_items_fails_before_any_feature_is_read(tmp_path, ratio, share, empty):
    toy = write_toy_dataset(tmp_path / "data")  # 50 items, all with interactions
    for name in toy["modalities"].values():  # unreadable features: reading them would be a different error
        (tmp_path / "data" / "toy" / name).write_bytes(b"not a matrix")
    with pytest.raises(DataError) as caught:
        NewItemDataset(Config(model="MILK", config_dict=dict(toy, cold_item_ratio=ratio, cold_valid_share=share)))
    message = str(caught.value)
    assert f"cold_item_ratio = {ratio}" in message and f"cold_valid_share = {share}" in message
    assert "of the 50 items with interactions" in message
    if empty == "warm":
        assert "leaves 1 warm item(s)" in message and "at least 2" in message
    else:
        assert f"has no {empty} items" in message and f"0 {empty}" in message


def test_feature_check_still_runs_when_the_split_is_fine(tmp_path):
    toy = write_toy_dataset(tmp_path / "data")
    np.save(tmp_path / "data" / "toy" / toy["modalities"]["visual"], np.zeros((50, 3, 2)))
    with pytest.raises(DataError, match="visual_feat.npy"):
        NewItemDataset(Config(model="MILK", config_dict=toy))
