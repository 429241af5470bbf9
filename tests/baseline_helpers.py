"""Shared fixtures and behaviour checks for the plugin's content models (MILK, DUIF, VBPR, MTPR, CLCRec, CCFCRec,
DropoutNet, Heater, GAR, GoRec).

Every content model must: train on a toy batch, score new items from content alone, never let new items reach
training, and give the same scores through predict, full_sort_predict and the serving path. The checks live here
once; test_model_contract.py runs them for every model, and each model's own test module keeps its model-specific
tests.
"""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional

import numpy as np
import pytest
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_milk.data.roles import ROLE_PAD, ROLE_TEST, ROLE_VALID, ROLE_WARM
from recbole_milk.options import validate_options
from recbole_milk.pretrained import write_cf_embeddings

USER, ITEM, NEG = "user_id", "item_id", "neg_item_id"
PROPERTIES = Path(__file__).resolve().parents[1] / "properties" / "model"
N_USERS, N_ITEMS, DIMS = 7, 13, (4, 3)
WARM = list(range(1, 9))
NEW = [9, 10, 11, 12]  # 9, 10 valid; 11, 12 test
# A training batch: warm positives and warm negatives only, as the plugin's sampler gives.
TRAIN_BATCH = ([1, 2, 3, 1, 4, 5, 6], [1, 2, 5, 6, 1, 8, 3], [3, 4, 7, 8, 2, 1, 2])
CF_SIZE = 5


def is_content_buffer(name: str) -> bool:
    """The content base's inputs (features, fills, availability, roles): fixed by the data, never trained."""
    return name.startswith(("item_feature_", "imputation_value_", "prepared_fill_")) or name in (
        "item_availability", "item_pattern", "warm_items")


class FakeConfig(dict):
    """RecBole's Config answers None for unknown keys."""

    def __getitem__(self, key):
        return self.get(key)


def model_defaults(model_class: type) -> Dict[str, Any]:
    """The yaml defaults a model gets: its bases' files (ContentRecommender.yaml, ...), then its own."""
    defaults: Dict[str, Any] = {}
    for cls in reversed(model_class.__mro__):
        path = PROPERTIES / f"{cls.__name__}.yaml"
        if path.is_file():
            defaults.update(yaml.safe_load(path.read_text()) or {})
    return defaults


def make_config(model_class: type, **overrides: Any) -> FakeConfig:
    config = FakeConfig(model_defaults(model_class))
    config.update(USER_ID_FIELD=USER, ITEM_ID_FIELD=ITEM, NEG_PREFIX="neg_", device=torch.device("cpu"), seed=2023)
    config.update(overrides)
    return config


def make_dataset(seed: int = 0, dims=DIMS) -> SimpleNamespace:
    """The dataset contract of recbole_milk.data, with warm, valid and test items and some missing modalities, and
    pre-trained CF rows for the two-stage models (non-zero for every item: the model must zero the new ones)."""
    generator = torch.Generator().manual_seed(seed)
    availability = torch.ones(N_ITEMS, len(dims), dtype=torch.bool)
    availability[0] = False
    availability[3, 0] = False
    availability[9, 1] = False
    availability[12, 0] = False
    role = torch.full((N_ITEMS,), ROLE_WARM, dtype=torch.long)
    role[0] = ROLE_PAD
    role[[9, 10]] = ROLE_VALID
    role[[11, 12]] = ROLE_TEST
    warm = role == ROLE_WARM
    features, fills = [], []
    for m, d in enumerate(dims):
        rows = torch.randn(N_ITEMS, d, generator=generator) + m
        present = availability[:, m]
        fill = rows[present & warm].mean(dim=0)
        rows = torch.where(present.unsqueeze(1), rows, fill)
        rows[0] = 0.0
        features.append(rows)
        fills.append(fill)
    # Internal id i has token f"u{i}" / f"i{i}"; row 0 is PAD, as in RecBole.
    tokens = {USER: np.array(["[PAD]"] + [f"u{i}" for i in range(1, N_USERS)]),
              ITEM: np.array(["[PAD]"] + [f"i{i}" for i in range(1, N_ITEMS)])}
    cf_generator = torch.Generator().manual_seed(seed + 1)
    pretrained_cf = (torch.randn(N_USERS, CF_SIZE, generator=cf_generator),
                     torch.randn(N_ITEMS, CF_SIZE, generator=cf_generator))
    return SimpleNamespace(
        pretrained_cf=pretrained_cf,
        num=lambda field: N_USERS if field == USER else N_ITEMS,
        modality_names=[f"mod{m}" for m in range(len(dims))],
        item_features=features,
        item_availability=availability,
        imputation_values=fills,
        item_role=role,
        uid_field=USER,
        iid_field=ITEM,
        field2id_token=tokens,
    )


def write_pretrained(folder: Path, dataset: SimpleNamespace, dim: int = 5, seed: int = 1) -> Path:
    """A pre-trained CF folder for `dataset`, rows stored in reverse token order (lookup must go by token)."""
    generator = torch.Generator().manual_seed(seed)
    user_tokens = dataset.field2id_token[USER][1:][::-1]
    item_tokens = dataset.field2id_token[ITEM][1:][::-1]
    warm_tokens = dataset.field2id_token[ITEM][(dataset.item_role == ROLE_WARM).numpy()]
    users = torch.randn(len(user_tokens), dim, generator=generator).numpy()
    items = torch.randn(len(item_tokens), dim, generator=generator).numpy()
    return write_cf_embeddings(str(folder), user_tokens, item_tokens, users, items, warm_tokens, {"model": "test"})


def make_model(model_class: type, dataset: Optional[SimpleNamespace] = None, **overrides: Any):
    torch.manual_seed(2023)
    return model_class(make_config(model_class, **overrides), dataset or make_dataset())


def check_option_is_rejected(model_class: type, key: str, value: Any) -> None:
    """The Config's one validator rejects `key` = `value` for this model, naming the key."""
    from recbole_milk.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        validate_options(make_config(model_class, **{key: value}), model_class)


# Options that keep the unit-test models small and fast; the checks do not depend on the layer sizes.
SMALL_OPTIONS = {
    "CLCRec": {"embedding_size": 16, "content_hidden_sizes": [16]},
    "CCFCRec": {"embedding_size": 16, "content_hidden_sizes": [16]},
    "GAR": {"hidden_sizes": [32], "generator_hidden_sizes": [16]},
    "GoRec": {"num_clusters": 3, "latent_size": 8, "hidden_size": 16},
}


def make_small_model(model_class: type, dataset: Optional[SimpleNamespace] = None, **overrides: Any):
    """make_model with the model's SMALL_OPTIONS; `overrides` win over them."""
    return make_model(model_class, dataset, **{**SMALL_OPTIONS.get(model_class.__name__, {}), **overrides})


def batch(users, pos, neg) -> Interaction:
    return Interaction({USER: torch.tensor(users), ITEM: torch.tensor(pos), NEG: torch.tensor(neg)})


def all_scores(model, users=(1, 2, 3, 4, 5, 6)) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({USER: torch.tensor(users)}))
    return scores.view(len(users), -1)


def item_tables(model):
    """(name, tensor) of every parameter or buffer with one row per item, except the content inputs."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [(name, t) for name, t in named
            if t.dim() >= 1 and t.shape[0] == model.n_items and not is_content_buffer(name)]


# ----- the checks every baseline must pass ---------------------------------------------------------------------


def check_loss_is_finite_and_training_lowers_it(model) -> None:
    interaction = batch(*TRAIN_BATCH)
    model.train()
    loss = model.calculate_loss(interaction)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    model.eval()
    assert model.calculate_loss(interaction).item() < first


def check_new_items_are_scored_from_content_only(model) -> None:
    """New items' scores: unchanged when anything the model stores per item (ID factors, CF rows) changes for them;
    changed when their content changes; equal to the serving path that sees raw content only."""
    before = all_scores(model)
    with torch.no_grad():
        for _, table in item_tables(model):
            if table.dtype.is_floating_point:
                table[NEW] += 5.0
    after = all_scores(model)
    assert torch.allclose(before[:, NEW], after[:, NEW], atol=1e-6)

    dataset = make_dataset()
    raw = [f[NEW] for f in dataset.item_features]
    for f, m in zip(raw, range(len(raw))):
        f[~dataset.item_availability[NEW, m]] = float("nan")  # missing rows may hold anything
    with torch.no_grad():
        served = model.encode_items(raw, dataset.item_availability[NEW])
        users = model.user_embeddings(torch.tensor([1, 2, 3, 4, 5, 6]))
    assert torch.allclose(users @ served.t(), after[:, NEW], atol=1e-5)

    with torch.no_grad():
        model.item_feature_0[NEW[0]] += 1.0
    changed = all_scores(model)
    assert not torch.allclose(changed[:, NEW[0]], after[:, NEW[0]])
    assert torch.allclose(changed[:, NEW[1:]], after[:, NEW[1:]], atol=1e-6)


def check_no_new_item_leakage(model) -> None:
    """A training step gives no gradient to any per-item row of a new item; pre-trained inputs are frozen buffers;
    new items' rows of per-item buffers (CF embeddings) are zero."""
    model.train()
    model.zero_grad()
    model.calculate_loss(batch(*TRAIN_BATCH)).backward()
    for name, param in model.named_parameters():
        if param.shape[0] == model.n_items and param.grad is not None:
            assert param.grad[NEW].abs().sum() == 0, name
    parameter_names = {name for name, _ in model.named_parameters()}
    for name, buffer in model.named_buffers():
        assert name not in parameter_names
        if not is_content_buffer(name) and buffer.dim() and buffer.shape[0] == model.n_items \
                and buffer.dtype.is_floating_point:
            assert buffer[NEW].abs().sum() == 0, name
    assert not any(name in parameter_names for name in ("user_cf", "item_cf"))


def check_full_sort_predict_equals_predict(model) -> None:
    model.eval()
    users = torch.tensor([1, 2, 3, 4, 5, 6]).repeat_interleave(N_ITEMS - 1)
    items = torch.arange(1, N_ITEMS).repeat(6)
    with torch.no_grad():
        pointwise = model.predict(Interaction({USER: users, ITEM: items})).view(6, -1)
    assert torch.allclose(pointwise, all_scores(model)[:, 1:], atol=1e-5)


def check_data_buffers_stay_out_of_checkpoints(model) -> None:
    """Content and frozen CF buffers come from the data, so checkpoints hold none of them."""
    keys = set(model.state_dict())
    for name, _ in model.named_buffers():
        if is_content_buffer(name) or name in ("user_cf", "item_cf"):
            assert name not in keys, name


def check_yaml_defaults_pass_the_option_checks(model_class: type) -> None:
    defaults = model_defaults(model_class)
    validate_options(defaults, model_class)
    for key in model_class.option_rules:
        assert key in defaults, f"{key} has no default in the yaml of {model_class.__name__} or its bases"


def load_export_script():
    """dataset_prep/export_cf_embeddings.py as a module (dataset_prep is a folder of scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "dataset_prep" / "export_cf_embeddings.py"
    spec = importlib.util.spec_from_file_location("export_cf_embeddings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_end_to_end(model_name: str, root: Path, saved: bool = False, **overrides: Any) -> Dict[str, Any]:
    """Train `model_name` for 2 epochs on the toy fixture through run_recbole_milk."""
    from fixtures import write_toy_dataset

    from recbole_milk.quick_start import run_recbole_milk

    config_dict = write_toy_dataset(root, n_users=30, n_items=40)
    config_dict.update(epochs=2, eval_step=1, train_batch_size=64, **overrides)
    return run_recbole_milk(model=model_name, dataset="toy", config_dict=config_dict, saved=saved)


@pytest.fixture(scope="module")
def toy_cf_folder(tmp_path_factory):
    """Warm BPR embeddings of the toy fixture (30 users, 40 items), exported by the stage-1 script."""
    from fixtures import write_toy_dataset

    export_cf_embeddings = load_export_script().export_cf_embeddings
    root = tmp_path_factory.mktemp("toy_cf")
    config_dict = write_toy_dataset(root, n_users=30, n_items=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["pytest"])
        patch.chdir(root)
        export_cf_embeddings(str(root / "cf"), "toy", config_dict={**config_dict, "epochs": 3, "eval_step": 1})
    return root / "cf"


@pytest.fixture
def cf_folder(tmp_path):
    """A pre-trained CF folder for make_dataset(), as the two-stage models (DropoutNet, Heater, GAR, GoRec) need."""
    return str(write_pretrained(tmp_path / "cf", make_dataset()))
