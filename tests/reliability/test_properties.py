"""Property-based tests of the new-item split, the missing-modality masks and the environment sampler, over random
sizes, ratios, numbers of modalities and seeds."""
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import toy_config, write_toy_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_milk.data.dataset import (
    ROLE_PAD,
    ROLE_TEST,
    ROLE_VALID,
    ROLE_WARM,
    DataError,
    NewItemDataset,
)
from recbole_milk.data.missing import derived_rng, simulate_missing
from recbole_milk.data.utils import create_samplers
from recbole_milk.model.environments import EnvironmentSampler

QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DATASETS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
RATIOS = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


@st.composite
def count_distributions(draw, max_modalities: int):
    size = draw(st.integers(min_value=1, max_value=max_modalities))
    weights = draw(st.lists(st.integers(min_value=0, max_value=10), min_size=size, max_size=size).filter(any))
    return [w / sum(weights) for w in weights]


# ----- missing-modality masks -----

@QUICK
@given(n_items=st.integers(0, 300), n_modalities=st.integers(1, 6), ratio=RATIOS, seed=SEEDS, data=st.data())
def test_masks_drop_exactly_the_requested_share_and_counts(n_items, n_modalities, ratio, seed, data):
    probs = data.draw(st.none() | count_distributions(n_modalities))
    missing = simulate_missing(n_items, n_modalities, ratio, derived_rng(seed, "test"), probs)
    assert missing.shape == (n_items, n_modalities) and missing.dtype == bool
    per_item = missing.sum(axis=1)
    affected = round_half_up(ratio * n_items) if n_modalities else 0
    assert int((per_item > 0).sum()) == affected
    shares = [1.0] if probs is None else probs
    assert per_item.max(initial=0) <= len(shares)
    for k, share in enumerate(shares, start=1):  # counts apportioned exactly, not sampled
        assert abs(int((per_item == k).sum()) - share * affected) < 1
    again = simulate_missing(n_items, n_modalities, ratio, derived_rng(seed, "test"), probs)
    assert np.array_equal(missing, again)


# ----- environment sampler -----

@QUICK
@given(n_modalities=st.integers(2, 7), alpha=st.floats(1e-3, 1e3), equal=st.booleans(), cyclic=st.booleans(),
       resample=st.booleans(), seed=SEEDS)
def test_environments_are_finite_simplex_weights_with_the_documented_structure(n_modalities, alpha, equal, cyclic,
                                                                              resample, seed):
    sampler = EnvironmentSampler(n_modalities, alpha, include_equal_env=equal, cyclic_shift=cyclic,
                                 resample=resample, seed=seed)
    first, second = sampler(), sampler()
    assert first.shape == (n_modalities + int(equal), n_modalities) == (sampler.num_environments, n_modalities)
    for weights in (first, second):
        assert torch.isfinite(weights).all() and (weights >= 0).all()
        assert torch.allclose(weights.sum(dim=1), torch.ones(len(weights)), atol=1e-5)
    mixed = first[1:] if equal else first
    if equal:
        assert torch.allclose(first[0], torch.full((n_modalities,), 1.0 / n_modalities))
    if cyclic:  # each modality takes every weight once: it dominates exactly one environment
        for k in range(n_modalities):
            assert torch.equal(mixed[k], torch.roll(mixed[0], k))
    if not resample:
        assert torch.equal(first, second)
    twin = EnvironmentSampler(n_modalities, alpha, include_equal_env=equal, cyclic_shift=cyclic, resample=resample,
                              seed=seed)
    assert torch.equal(twin(), first) and torch.equal(twin(), second)


# ----- the split, the masks and the negatives of a real dataset -----

def build_dataset(root: Path, n_users: int, n_items: int, n_modalities: int, seed: int, **options):
    toy = write_toy_dataset(root, n_users=n_users, n_items=n_items, n_modalities=n_modalities,
                            inter_per_user=min(4, n_items), seed=seed)
    return NewItemDataset(toy_config(toy, seed=seed, **options))


@DATASETS
@given(n_users=st.integers(3, 20), n_items=st.integers(4, 40), ratio=st.floats(0.01, 0.99),
       share=st.floats(0.01, 0.99), n_modalities=st.integers(1, 4), seed=st.integers(0, 10_000),
       setting=st.sampled_from(["FTFT", "FTMT", "MTMT"]))
def test_split_partitions_items_as_the_ratios_say_or_fails_naming_them(n_users, n_items, ratio, share, n_modalities,
                                                                      seed, setting):
    n_cold = round_half_up(ratio * n_items)
    n_valid = round_half_up(share * n_cold)
    n_test, n_warm = n_cold - n_valid, n_items - n_cold
    options = dict(cold_item_ratio=ratio, cold_valid_share=share, missing_setting=setting)
    with tempfile.TemporaryDirectory() as root:
        if n_warm < 2 or n_valid == 0 or n_test == 0:
            with pytest.raises(DataError, match=f"cold_item_ratio = {ratio} with cold_valid_share = {share}"):
                build_dataset(Path(root), n_users, n_items, n_modalities, seed, **options)
            return
        dataset = build_dataset(Path(root), n_users, n_items, n_modalities, seed, **options)
        role = dataset.item_role
        assert role[0] == ROLE_PAD
        assert [int((role == r).sum()) for r in (ROLE_WARM, ROLE_VALID, ROLE_TEST)] == [n_warm, n_valid, n_test]

        # Masks: new items follow the test ratio, warm items the train ratio, one modality each.
        available = dataset.item_availability
        missing_new = int((~available[(role == ROLE_VALID) | (role == ROLE_TEST)]).any(dim=1).sum())
        missing_warm = int((~available[role == ROLE_WARM]).any(dim=1).sum())
        test_ratio, train_ratio = {"FTFT": (0, 0), "FTMT": (0.5, 0), "MTMT": (0.5, 0.3)}[setting]
        assert missing_new == round_half_up(test_ratio * n_cold)
        assert missing_warm == round_half_up(train_ratio * n_warm)
        assert ((~available[1:]).sum(dim=1) <= 1).all()  # one modality at most, so an M=1 item may lose all

        # Training holds warm items only, and its negatives are warm items the user has not used.
        train, valid, test = dataset.build()
        assert (role[train.inter_feat["item_id"]] == ROLE_WARM).all()
        sampler, _, _ = create_samplers(dataset.config, dataset, [train, valid, test])
        users = torch.arange(1, dataset.user_num).repeat(3)
        negatives = sampler.sample_by_key_ids(users.numpy(), 1)
        assert (role[negatives] == ROLE_WARM).all()
        used = set(zip(train.inter_feat["user_id"].tolist(), train.inter_feat["item_id"].tolist()))
        used_count = np.bincount(train.inter_feat["user_id"].numpy(), minlength=dataset.user_num)
        for user, item in zip(users.tolist(), negatives.tolist()):
            assert (user, item) not in used or used_count[user] == n_warm  # only a user who used every warm item

        twin = build_dataset(Path(root) / "twin", n_users, n_items, n_modalities, seed, **options)
        assert torch.equal(twin.item_role, role) and torch.equal(twin.item_availability, available)
