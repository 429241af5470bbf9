"""Pre-trained warm CF embeddings: folder format, lookup by token, split checks, and the stage-1 export script."""
import json
import sys

import numpy as np
import pytest
import torch
from baseline_helpers import (
    ITEM,
    NEW,
    USER,
    WARM,
    load_export_script,
    make_dataset,
    toy_cf_folder,  # noqa: F401 (module fixture)
    write_pretrained,
)
from fixtures import toy_config, write_toy_dataset

from recbole_milk.data.dataset import ROLE_VALID, ROLE_WARM
from recbole_milk.options import ConfigError
from recbole_milk.pretrained import (
    ITEM_FILE,
    META_FILE,
    USER_FILE,
    PretrainedCFError,
    attach_pretrained_cf,
    load_cf_embeddings,
    read_cf_folder,
    write_cf_embeddings,
)


def test_rows_are_looked_up_by_token_not_by_position(tmp_path):
    dataset = make_dataset()
    folder = write_pretrained(tmp_path / "cf", dataset)
    meta, users, items = read_cf_folder(str(folder))
    user_matrix, item_matrix = load_cf_embeddings(str(folder), dataset)
    for internal_id in range(1, 7):
        row = meta["user_tokens"].index(f"u{internal_id}")
        assert torch.equal(user_matrix[internal_id], torch.from_numpy(users[row]))
    for internal_id in WARM:
        row = meta["item_tokens"].index(f"i{internal_id}")
        assert torch.equal(item_matrix[internal_id], torch.from_numpy(items[row]))
    assert torch.equal(user_matrix[0], torch.zeros(user_matrix.shape[1]))


def test_items_that_are_not_warm_get_zero_rows_on_write_and_on_load(tmp_path):
    dataset = make_dataset()
    folder = write_pretrained(tmp_path / "cf", dataset)
    meta, _, items = read_cf_folder(str(folder))
    new_rows = [meta["item_tokens"].index(f"i{i}") for i in NEW]
    assert not items[new_rows].any()
    items[new_rows] = 7.0  # a file that carries rows for new items anyway
    np.save(folder / ITEM_FILE, items)
    _, item_matrix = load_cf_embeddings(str(folder), dataset)
    assert torch.equal(item_matrix[NEW], torch.zeros(len(NEW), item_matrix.shape[1]))
    assert item_matrix[WARM].abs().sum() > 0


def test_embeddings_trained_with_a_new_item_as_warm_are_refused(tmp_path):
    dataset = make_dataset()
    trained_on = make_dataset()
    trained_on.item_role[NEW[0]] = ROLE_WARM  # the export saw interactions of an item that is new here
    folder = write_pretrained(tmp_path / "cf", trained_on)
    with pytest.raises(PretrainedCFError, match=r"different item split.*1 of its warm items.*i9.*export_cf_embeddings"):
        load_cf_embeddings(str(folder), dataset)


def test_embeddings_missing_a_warm_item_are_refused(tmp_path):
    dataset = make_dataset()
    trained_on = make_dataset()
    trained_on.item_role[WARM[0]] = ROLE_VALID
    folder = write_pretrained(tmp_path / "cf", trained_on)
    with pytest.raises(PretrainedCFError, match=r"1 warm items here were not warm there.*i1"):
        load_cf_embeddings(str(folder), dataset)


def test_a_user_without_a_row_is_an_error_naming_the_user(tmp_path):
    dataset = make_dataset()
    folder = write_pretrained(tmp_path / "cf", dataset)
    dataset.field2id_token[USER] = np.append(dataset.field2id_token[USER], "u_new")
    with pytest.raises(PretrainedCFError, match="no row for 1 users.*u_new"):
        load_cf_embeddings(str(folder), dataset)


@pytest.mark.parametrize("missing", [META_FILE, USER_FILE, ITEM_FILE])
def test_an_incomplete_folder_names_the_missing_file_and_the_export_command(tmp_path, missing):
    folder = write_pretrained(tmp_path / "cf", make_dataset())
    (folder / missing).unlink()
    with pytest.raises(PretrainedCFError, match=f"missing {missing}.*export_cf_embeddings.py"):
        read_cf_folder(str(folder))


def test_rows_that_do_not_match_the_token_lists_are_rejected(tmp_path):
    folder = write_pretrained(tmp_path / "cf", make_dataset())
    np.save(folder / USER_FILE, np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(PretrainedCFError, match="do not match the token lists"):
        read_cf_folder(str(folder))


def test_non_finite_embeddings_are_rejected(tmp_path):
    folder = write_pretrained(tmp_path / "cf", make_dataset())
    users = np.load(folder / USER_FILE)
    users[0, 0] = np.nan
    np.save(folder / USER_FILE, users)
    with pytest.raises(PretrainedCFError, match="NaN"):
        read_cf_folder(str(folder))


def test_rewriting_a_folder_replaces_it_and_leaves_no_temporary_files(tmp_path):
    dataset = make_dataset()
    write_pretrained(tmp_path / "cf", dataset, dim=5, seed=1)
    write_pretrained(tmp_path / "cf", dataset, dim=3, seed=2)
    meta, users, _ = read_cf_folder(str(tmp_path / "cf"))
    assert users.shape[1] == 3 and meta["embedding_size"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cf"]


def test_writer_rejects_warm_tokens_without_rows(tmp_path):
    with pytest.raises(ValueError, match="without an embedding row"):
        write_cf_embeddings(str(tmp_path / "cf"), ["u1"], ["i1"], np.zeros((1, 2)), np.zeros((1, 2)), ["i2"], {})
    assert not (tmp_path / "cf").exists()


def test_a_folder_option_that_is_not_a_folder_fails_before_any_data_is_read(tmp_path):
    config_dict = write_toy_dataset(tmp_path)
    for model in ("DropoutNet", "Heater"):
        with pytest.raises(ConfigError, match="pretrained_cf_dir"):
            toy_config(config_dict, model=model, pretrained_cf_dir=str(tmp_path / "absent"))


def test_attached_embeddings_are_what_a_two_stage_model_reads(toy_cf_folder):  # noqa: F811
    from recbole_milk.data.utils import create_dataset

    root = toy_cf_folder.parent
    dataset = create_dataset(toy_config(write_toy_dataset(root, n_users=30, n_items=40)))
    attach_pretrained_cf(dataset, str(toy_cf_folder))
    users, items = load_cf_embeddings(str(toy_cf_folder), dataset)
    assert torch.equal(dataset.pretrained_cf[0], users) and torch.equal(dataset.pretrained_cf[1], items)


def test_export_writes_warm_rows_by_token_and_zero_rows_for_new_items(toy_cf_folder):  # noqa: F811
    from recbole_milk.checkpoint import load_checkpoint
    from recbole_milk.data.utils import create_dataset

    root = toy_cf_folder.parent
    config = toy_config(write_toy_dataset(root, n_users=30, n_items=40))
    dataset = create_dataset(config)
    meta, users, items = read_cf_folder(str(toy_cf_folder))
    tokens = np.asarray(dataset.field2id_token[ITEM])
    warm = (dataset.item_role == ROLE_WARM).numpy()
    assert set(meta["warm_item_tokens"]) == set(tokens[warm])
    assert meta["model"] == "BPR" and meta["dataset"] == "toy" and meta["epochs_trained"] == 3
    new_rows = [meta["item_tokens"].index(t) for t in tokens[~warm][1:]]
    assert len(new_rows) == 8 and not items[new_rows].any()

    # The rows are the BPR checkpoint's embeddings, re-indexed by token.
    state = load_checkpoint(meta["checkpoint"])["state_dict"]
    for internal_id in np.flatnonzero(warm)[:5]:
        row = meta["item_tokens"].index(tokens[internal_id])
        assert np.allclose(items[row], state["item_embedding.weight"][internal_id].numpy())
    user_tokens = np.asarray(dataset.field2id_token[USER])
    row = meta["user_tokens"].index(user_tokens[1])
    assert np.allclose(users[row], state["user_embedding.weight"][1].numpy())

    # The dataset agrees, so the baselines can load it.
    _, item_matrix = load_cf_embeddings(str(toy_cf_folder), dataset)
    assert item_matrix[~torch.from_numpy(warm)].abs().sum() == 0


def test_export_command_line_writes_a_folder(tmp_path, monkeypatch, capsys):
    config_dict = write_toy_dataset(tmp_path, n_users=20, n_items=30)
    script = load_export_script()
    monkeypatch.setattr(sys, "argv", ["export_cf_embeddings.py"])
    summary = script.main([
        "--dataset=toy", f"--data_path={config_dict['data_path']}", f"--output={tmp_path / 'cf'}", "--epochs=1",
        f"--checkpoint_dir={config_dict['checkpoint_dir']}", f"--log_dir={config_dict['log_dir']}",
        f"--tensorboard_dir={config_dict['tensorboard_dir']}", "--save_dataset=False", "--state=WARNING",
        "--modalities={'visual': 'visual_feat.npy', 'acoustic': 'acoustic_feat.npy'}",
    ])
    assert summary["epochs_trained"] == 1 and summary["warm_items"] == 24
    assert "--pretrained_cf_dir=" in capsys.readouterr().out
    assert json.loads((tmp_path / "cf" / META_FILE).read_text())["format"] == "recbole-milk-cf/1"


@pytest.mark.parametrize("override", ["epochs=3", "--eval_step=10"])
def test_export_command_line_rejects_malformed_overrides_and_validation(override, capsys):
    with pytest.raises(SystemExit):
        load_export_script().parse_args(["--dataset=toy", "--output=x", override])
    assert override.split("=")[0] in capsys.readouterr().err


def test_a_run_holding_warm_pairs_out_refuses_embeddings_trained_without_that_holdout(tmp_path):
    from recbole.model.general_recommender import BPR

    from recbole_milk.data.dataset import NewItemDataset
    from recbole_milk.stage_one import export_bpr

    config_dict = write_toy_dataset(tmp_path / "data")

    def dataset_and_folder(name, **overrides):
        dataset = NewItemDataset(toy_config(config_dict, **overrides))
        return dataset, str(export_bpr(BPR(dataset.config, dataset), dataset, str(tmp_path / name), {"model": "BPR"}))

    plain, plain_folder = dataset_and_folder("plain")
    scoped, scoped_folder = dataset_and_folder("scoped", eval_scopes=["new", "warm"])
    load_cf_embeddings(scoped_folder, scoped)  # the same held-out pairs
    load_cf_embeddings(scoped_folder, plain)  # trained on fewer interactions than the run may use: nothing leaks
    with pytest.raises(PretrainedCFError, match="warm holdout.*held-out warm interactions"):
        load_cf_embeddings(plain_folder, scoped)
    other, _ = dataset_and_folder("other", eval_scopes=["all"], warm_holdout_ratio=[0.3, 0.3])
    with pytest.raises(PretrainedCFError, match="warm_holdout_ratio \\[0.3, 0.3\\]"):
        load_cf_embeddings(scoped_folder, other)
