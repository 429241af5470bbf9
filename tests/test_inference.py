import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import write_toy_dataset

from recbole_milk import inference
from recbole_milk.inference import NewItemScorer, ServingError
from recbole_milk.quick_start import load_data_and_model, run_recbole_milk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import recommend_new_items  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MILK model trained on a toy dataset (3 modalities), its artefact, and the model reloaded from checkpoint."""
    root = tmp_path_factory.mktemp("serving")
    config = write_toy_dataset(root / "data", n_users=30, n_items=60, n_modalities=3)
    result = run_recbole_milk("MILK", config["dataset"], config_dict=dict(config, epochs=3, eval_step=1))
    _, model, dataset, *_ = load_data_and_model(result["saved_model_file"])
    model.eval()
    return {"artifact": result["artifact_file"], "model": model, "dataset": dataset}


def _raw_rows(dataset, items):
    """Feature rows of `items` as a user would send them: NaN where the item misses the modality."""
    out = {}
    for m, name in enumerate(dataset.modality_names):
        rows = dataset.item_features[m][items].numpy().copy()
        rows[~dataset.item_availability[items, m].numpy()] = np.nan
        out[name] = rows
    return out


def test_artifact_loads_without_unpickling_code(trained):
    artifact = torch.load(trained["artifact"], weights_only=True)
    assert artifact["model"] == "MILK" and len(artifact["modality_dims"]) == 3


def test_scorer_scores_equal_full_sort_predict(trained):
    model, dataset = trained["model"], trained["dataset"]
    scorer = NewItemScorer.from_artifact(trained["artifact"], batch_size=7)
    items = torch.arange(1, dataset.item_num)
    users = torch.arange(1, dataset.user_num)
    interaction = {model.USER_ID: users}
    expected = model.full_sort_predict(interaction).view(len(users), -1)[:, 1:]
    tokens = list(dataset.field2id_token[dataset.uid_field][1:])
    got = scorer.score(tokens, scorer.encode_items(_raw_rows(dataset, items)))
    assert torch.allclose(got, expected, atol=1e-5)


def test_missing_modalities_get_the_imputed_content_score(trained):
    dataset = trained["dataset"]
    scorer = NewItemScorer.from_artifact(trained["artifact"])
    rows = _raw_rows(dataset, torch.tensor([1, 2]))
    names = dataset.modality_names
    one_missing = {name: rows[name].copy() for name in names}
    one_missing[names[0]][:] = np.nan
    imputed = {name: rows[name].copy() for name in names}
    imputed[names[0]][:] = dataset.imputation_values[0].numpy()
    assert torch.allclose(scorer.encode_items(one_missing), scorer.encode_items(imputed), atol=1e-6)
    # A modality left out entirely is the same as all-NaN rows.
    left_out = {name: one_missing[name] for name in names[1:]}
    assert torch.allclose(scorer.encode_items(left_out), scorer.encode_items(one_missing), atol=1e-6)
    all_missing = {name: np.full_like(rows[name], np.nan) for name in names}
    all_imputed = {name: np.tile(dataset.imputation_values[m].numpy(), (2, 1)) for m, name in enumerate(names)}
    assert torch.allclose(scorer.encode_items(all_missing), scorer.encode_items(all_imputed), atol=1e-6)


def test_bad_features_are_named(trained):
    scorer = NewItemScorer.from_artifact(trained["artifact"])
    name = scorer.modality_names[0]
    with pytest.raises(ServingError, match=f"'{name}'.*shape"):
        scorer.encode_items({name: np.zeros((2, scorer.modality_dims[0] + 1))})
    with pytest.raises(ServingError, match="Unknown modalities.*'smell'"):
        scorer.encode_items({"smell": np.zeros((2, 3))})
    partial = np.zeros((2, scorer.modality_dims[0]))
    partial[1, 0] = np.nan
    with pytest.raises(ServingError, match="row 1"):
        scorer.encode_items({name: partial})
    with pytest.raises(ServingError, match="Unknown users"):
        scorer.recommend_items(["nobody"], {name: np.zeros((2, scorer.modality_dims[0]))}, k=1)


@pytest.mark.parametrize("score_block", [inference.SCORE_BLOCK, 8], ids=["one key block", "merged key blocks"])
def test_recommendations_are_the_top_scores_in_any_batch_size(trained, monkeypatch, score_block):
    monkeypatch.setattr(inference, "SCORE_BLOCK", score_block)
    dataset = trained["dataset"]
    features = _raw_rows(dataset, torch.arange(1, dataset.item_num))
    reference = NewItemScorer.from_artifact(trained["artifact"], batch_size=10_000)
    small = NewItemScorer.from_artifact(trained["artifact"], batch_size=4)
    tokens = list(reference.user_tokens[1:])
    full = reference.score(tokens, features)
    for scorer in (reference, small):
        positions, scores = scorer.recommend_items(tokens, features, k=5)
        assert torch.allclose(scores, torch.topk(full, 5, dim=1).values, atol=1e-5)
        assert torch.allclose(full.gather(1, positions), scores, atol=1e-6)
        users, user_scores = scorer.recommend_users(features, k=3)
        assert torch.allclose(user_scores, torch.topk(full.T, 3, dim=1).values, atol=1e-5)
        columns = {token: column for column, token in enumerate(tokens)}
        user_columns = torch.tensor([[columns[token] for token in row] for row in users])
        assert torch.allclose(full.T.gather(1, user_columns), user_scores, atol=1e-6)
        assert "[PAD]" not in set(users.reshape(-1))


def test_exported_embeddings_reproduce_the_scores(trained, tmp_path):
    dataset = trained["dataset"]
    scorer = NewItemScorer.from_artifact(trained["artifact"])
    features = _raw_rows(dataset, torch.arange(1, 11))
    paths = scorer.export_embeddings(str(tmp_path / "emb"), features, item_ids=[f"new{i}" for i in range(10)])
    users = np.load(paths["user_embeddings"])
    items = np.load(paths["item_embeddings"])
    tokens = Path(paths["user_tokens"]).read_text().split()
    assert Path(paths["item_tokens"]).read_text().split() == [f"new{i}" for i in range(10)]
    assert torch.allclose(torch.from_numpy(users @ items.T), scorer.score(tokens, features), atol=1e-5)


def test_cli_writes_a_recommendation_table(trained, tmp_path):
    dataset = trained["dataset"]
    folder = tmp_path / "new_items"
    folder.mkdir()
    features = _raw_rows(dataset, torch.arange(1, 9))
    for name, rows in list(features.items())[:-1]:  # the last modality is missing for all new items
        np.save(folder / f"{name}.npy", rows)
    (folder / "items.txt").write_text("".join(f"clip{i}\n" for i in range(8)))
    output = tmp_path / "recs.tsv"
    recommend_new_items.main(["--artifact", trained["artifact"], "--items", str(folder), "--k", "4",
                              "--output", str(output)])
    table = pd.read_csv(output, sep="\t", dtype={"user_id": str})
    assert list(table.columns) == ["item_id", "rank", "user_id", "score"]
    assert len(table) == 8 * 4 and set(table["rank"]) == {1, 2, 3, 4}
    assert (table.groupby("item_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    output_items = tmp_path / "user_recs.tsv"
    recommend_new_items.main(["--artifact", trained["artifact"], "--items", str(folder), "--k", "2",
                              "--mode", "items", "--output", str(output_items)])
    per_user = pd.read_csv(output_items, sep="\t", dtype={"user_id": str})
    assert len(per_user) == (dataset.user_num - 1) * 2 and set(per_user["item_id"]) <= {f"clip{i}" for i in range(8)}


@pytest.mark.parametrize("model_name", ["DUIF", "VBPR", "MTPR", "CLCRec", "CCFCRec"])
def test_content_baselines_serve_from_their_artifact(tmp_path, model_name):
    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=60, n_modalities=2)
    result = run_recbole_milk(model_name, config["dataset"], config_dict=dict(config, epochs=2, eval_step=1))
    _, model, dataset, *_ = load_data_and_model(result["saved_model_file"])
    model.eval()
    new_items = torch.nonzero(dataset.item_role > 0).squeeze(1)
    users = torch.arange(1, dataset.user_num)
    expected = model.full_sort_predict({model.USER_ID: users}).view(len(users), -1)[:, new_items]
    scorer = NewItemScorer.from_artifact(result["artifact_file"])
    tokens = list(dataset.field2id_token[dataset.uid_field][1:])
    assert torch.allclose(scorer.score(tokens, _raw_rows(dataset, new_items)), expected, atol=1e-5)


def test_a_two_stage_artefact_carries_its_cf_rows_and_serves_like_the_trained_model(tmp_path):
    config = write_toy_dataset(tmp_path / "data", n_users=30, n_items=60)
    result = run_recbole_milk("DropoutNet", "toy", config_dict=dict(config, epochs=2, eval_step=1, pretrain_epochs=2))
    _, model, dataset, *_ = load_data_and_model(result["saved_model_file"])
    model.eval()
    scorer = NewItemScorer.from_artifact(result["artifact_file"])
    assert torch.equal(scorer.model.user_cf, model.user_cf)
    items = torch.arange(1, 11)
    raw = _raw_rows(dataset, items)
    with torch.no_grad():
        expected = model.user_embeddings()[1:] @ model.encode_items(
            [torch.from_numpy(np.nan_to_num(raw[name])) for name in dataset.modality_names],
            dataset.item_availability[items]).t()
    served = scorer.score(list(scorer.user_tokens[1:]), raw)
    assert torch.allclose(served, expected, atol=1e-5)

