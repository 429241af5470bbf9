"""MILK model: environments, losses, inference paths, caching, options (milk-spec.md section 2)."""
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from baseline_helpers import model_defaults
from hypothesis import given, settings
from hypothesis import strategies as st
from recbole.data.interaction import Interaction

from recbole_milk.model.environments import (
    EnvironmentSampler,
    combine_environment_losses,
    sample_dirichlet,
)
from recbole_milk.model.general_recommender.milk import MILK
from recbole_milk.model.loss import alignment_loss
from recbole_milk.options import ConfigError, validate_options

USER, ITEM, NEG = "user_id", "item_id", "neg_item_id"
MILK_YAML = Path(__file__).resolve().parents[1] / "properties" / "model" / "MILK.yaml"


class FakeConfig(dict):
    """RecBole's Config answers None for unknown keys."""

    def __getitem__(self, key):
        return self.get(key)


def make_config(**overrides):
    config = FakeConfig(model_defaults(MILK))
    config.update(USER_ID_FIELD=USER, ITEM_ID_FIELD=ITEM, NEG_PREFIX="neg_", device=torch.device("cpu"), seed=2023)
    config.update(overrides)
    return config


def make_dataset(features, availability, n_users=4, names=None):
    """The dataset contract of recbole_milk.data: imputed float32 features, availability, imputation values."""
    availability = torch.as_tensor(availability, dtype=torch.bool)
    fills, imputed = [], []
    for m, rows in enumerate(features):
        rows = torch.as_tensor(rows, dtype=torch.float32)
        present = availability[:, m]
        fill = rows[present].mean(dim=0) if present.any() else torch.zeros(rows.shape[1])
        imputed.append(torch.where(present.unsqueeze(1), rows, fill))
        fills.append(fill)
    n_items = availability.shape[0]
    role = torch.zeros(n_items, dtype=torch.long)
    role[0] = -1
    return SimpleNamespace(
        num=lambda field: n_users if field == USER else n_items,
        modality_names=names or [f"mod{m}" for m in range(len(features))],
        item_features=imputed,
        item_availability=availability,
        imputation_values=fills,
        item_role=role,
    )


def random_dataset(n_items=9, dims=(4, 3, 5), n_users=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(n_items, d, generator=generator) for d in dims]
    availability = torch.ones(n_items, len(dims), dtype=torch.bool)
    availability[0] = False  # PAD
    availability[2, 1] = False
    availability[5, 0] = False
    availability[6, 1:] = False
    return make_dataset(features, availability, n_users=n_users)


def make_model(dataset=None, **overrides):
    torch.manual_seed(2023)
    return MILK(make_config(**overrides), dataset or random_dataset())


def batch(users, pos, neg):
    return Interaction({USER: torch.tensor(users), ITEM: torch.tensor(pos), NEG: torch.tensor(neg)})


TRAIN_BATCH = ([1, 2, 3, 1, 4], [1, 2, 5, 6, 1], [3, 4, 7, 8, 2])


# ----- environments --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    num_modalities=st.integers(2, 6),
    alpha=st.sampled_from([0.01, 0.1, 1.0, 10.0, 100.0]),
    include_equal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_cyclic_environments_are_simplex_weights_and_each_modality_dominates_once(
    num_modalities, alpha, include_equal, seed
):
    sampler = EnvironmentSampler(num_modalities, alpha, include_equal_env=include_equal, seed=seed)
    weights = sampler()
    assert weights.shape == (num_modalities + int(include_equal), num_modalities)
    assert sampler.num_environments == weights.shape[0]
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(weights.shape[0]), atol=1e-6)
    mixup = weights[1:] if include_equal else weights
    if include_equal:
        assert torch.equal(weights[0], torch.full((num_modalities,), 1.0 / num_modalities))
    assert sorted(mixup.argmax(dim=1).tolist()) == list(range(num_modalities))
    # Theta_m is Theta_{m-1} with the last weight moved to the front.
    for e in range(1, num_modalities):
        assert torch.equal(mixup[e], torch.cat([mixup[e - 1][-1:], mixup[e - 1][:-1]]))


def test_cyclic_shift_with_two_modalities_swaps_the_draw():
    weights = EnvironmentSampler(2, 1.0, seed=7)()
    first, second = weights[1].tolist()
    assert weights[0].tolist() == [0.5, 0.5]
    assert weights[2].tolist() == [second, first]


def test_cyclic_shift_direction_on_three_modalities():
    weights = EnvironmentSampler(3, 1.0, include_equal_env=False, seed=3)()
    a, b, c = weights[0].tolist()
    assert weights[1].tolist() == [c, a, b]
    assert weights[2].tolist() == [b, c, a]


def test_without_cyclic_shift_environments_are_independent_draws():
    weights = EnvironmentSampler(3, 1.0, include_equal_env=False, cyclic_shift=False, seed=3)()
    assert weights.shape == (3, 3)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3), atol=1e-6)
    assert not torch.equal(torch.sort(weights[0]).values, torch.sort(weights[1]).values)


def test_environments_are_redrawn_every_call_unless_fixed():
    resampled = EnvironmentSampler(3, 1.0, seed=11)
    assert not torch.equal(resampled(), resampled())
    fixed = EnvironmentSampler(3, 1.0, resample=False, seed=11)
    first = fixed()
    first.add_(1.0)  # callers cannot alter the fixed environments
    assert torch.equal(fixed(), fixed())
    assert torch.allclose(fixed().sum(dim=1), torch.ones(4), atol=1e-6)


def test_environments_depend_on_the_seed_only():
    draws = [EnvironmentSampler(4, 0.1, seed=5)() for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], EnvironmentSampler(4, 0.1, seed=6)())


def test_a_restored_sampler_draws_on_as_the_uninterrupted_one():
    sampler = EnvironmentSampler(3, 0.1, seed=5)
    for _ in range(3):
        sampler()
    restored = EnvironmentSampler(3, 0.1, seed=99)
    restored.load_state(sampler.state())
    draws = EnvironmentSampler.draws_per_call + 2  # across the refill of the drawn-ahead rows
    assert all(torch.equal(sampler(), restored()) for _ in range(draws))


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_dirichlet_draws_have_the_dirichlet_moments(alpha):
    dim, draws = 3, 6000
    samples = sample_dirichlet(alpha, draws, dim, torch.Generator().manual_seed(0)).double()
    expected_var = (dim - 1) / (dim**2 * (dim * alpha + 1))
    assert torch.allclose(samples.mean(dim=0), torch.full((dim,), 1.0 / dim, dtype=torch.float64), atol=0.02)
    assert torch.allclose(samples.var(dim=0), torch.full((dim,), expected_var, dtype=torch.float64), rtol=0.1)


def test_tiny_dirichlet_alpha_never_gives_nan():
    samples = sample_dirichlet(0.01, 5000, 2, torch.Generator().manual_seed(0))
    assert torch.isfinite(samples).all()
    assert torch.allclose(samples.sum(dim=1), torch.ones(5000), atol=1e-6)
    assert (samples.max(dim=1).values > 0.99).float().mean() > 0.9  # mass sits on the corners


# ----- alignment and objective ----------------------------------------------------------------------------------


def test_alignment_loss_matches_hand_computation_with_a_missing_modality():
    embeddings = torch.tensor(
        [
            [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]],
            [[1.0, 1.0], [1.0, 1.0], [3.0, 3.0]],
            [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
        ]
    )
    availability = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    # Per-pair squared distances / D: item 0: 1/2, 4/2, 5/2; item 1: only (0, 1): 0; item 2: 4/2, 5/2, 1/2.
    assert alignment_loss(embeddings, availability).item() == pytest.approx(10.0 / 7.0)
    # Unmasked, item 1's pairs with its missing modality would add 8/2 twice.
    assert alignment_loss(embeddings, torch.ones(3, 3, dtype=torch.bool)).item() == pytest.approx(18.0 / 9.0)


def test_alignment_loss_is_zero_with_a_finite_gradient_when_no_pair_is_available():
    embeddings = torch.randn(3, 3, 4, requires_grad=True)
    availability = torch.tensor([[True, False, False], [False, False, False], [False, False, True]])
    loss = alignment_loss(embeddings, availability)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(embeddings.grad).all()


def test_environment_loss_reductions():
    losses = torch.tensor([1.0, 2.0, 4.0])
    mean = combine_environment_losses(losses, "mean", 10.0)
    total = combine_environment_losses(losses, "sum", 10.0)
    assert mean.item() == pytest.approx(7.0 / 3.0 + 10.0 * statistics.pvariance([1.0, 2.0, 4.0]))
    assert total.item() == pytest.approx(7.0 + 10.0 * statistics.variance([1.0, 2.0, 4.0]))


def _hand_made_model(**overrides):
    # Items 1..4; modality 0 has 2 dims, modality 1 has 3; item 2 misses modality 1.
    features = [
        [[0, 0], [1, 0], [0, 1], [1, 1], [2, -1]],
        [[0, 0, 0], [1, 0, 0], [9, 9, 9], [0, 1, 1], [1, -1, 0]],
    ]
    availability = [[False, False], [True, True], [True, False], [True, True], [True, True]]
    config = dict(
        embedding_size=2, normalize_features=False, invariance_weight=3.0, align_weight=0.5, reg_weight=0.1
    )
    config.update(overrides)
    model = make_model(make_dataset(features, availability, n_users=3), **config)
    with torch.no_grad():
        model.extractors[0].weight.copy_(torch.tensor([[1.0, 0.5], [-0.5, 1.0]]))
        model.extractors[0].bias.copy_(torch.tensor([0.1, 0.0]))
        model.extractors[1].weight.copy_(torch.tensor([[0.5, 0.0, 1.0], [1.0, -1.0, 0.5]]))
        model.extractors[1].bias.copy_(torch.tensor([0.0, -0.2]))
        model.user_embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -0.5], [0.3, 0.8]]))
    env_weights = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.3, 0.7]])
    model.environments = lambda: env_weights.clone()
    return model, env_weights.tolist()


def _hand_loss(model, env_weights, users, pos, neg, reduction, use_invariance=True, use_alignment=True):
    """The objective of milk-spec.md section 2, in plain Python arithmetic."""
    feats = [t.tolist() for t in model._tables("item_feature")]
    avail = model.item_availability.tolist()
    weights = [[[float(w) for w in row] for row in ext.weight.tolist()] for ext in model.extractors]
    biases = [ext.bias.tolist() for ext in model.extractors]
    user_rows = model.user_embedding.weight.tolist()

    def c(item, m):
        return [sum(w * x for w, x in zip(row, feats[m][item])) + b for row, b in zip(weights[m], biases[m])]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    def score(user, item, theta):
        return sum(theta[m] * dot(user_rows[user], c(item, m)) for m in range(2))

    envs = env_weights if use_invariance else [[0.5, 0.5]]
    env_losses = [
        statistics.fmean(math.log1p(math.exp(score(u, n, th) - score(u, p, th))) for u, p, n in zip(users, pos, neg))
        for th in envs
    ]
    if not use_invariance:
        loss = env_losses[0]
    elif reduction == "mean":
        loss = statistics.fmean(env_losses) + model.invariance_weight * statistics.pvariance(env_losses)
    else:
        loss = sum(env_losses) + model.invariance_weight * statistics.variance(env_losses)
    if use_alignment:
        terms = [
            statistics.fmean((a - b) ** 2 for a, b in zip(c(j, 0), c(j, 1)))
            for j in sorted(set(pos))
            if avail[j][0] and avail[j][1]
        ]
        loss += model.align_weight * (statistics.fmean(terms) if terms else 0.0)

    def fused(item):
        return [(a + b) / 2 for a, b in zip(c(item, 0), c(item, 1))]

    reg = statistics.fmean(
        dot(user_rows[u], user_rows[u]) + dot(fused(p), fused(p)) + dot(fused(n), fused(n))
        for u, p, n in zip(users, pos, neg)
    )
    return loss + model.reg_weight * reg


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_total_loss_matches_hand_computation(reduction):
    model, env_weights = _hand_made_model(env_loss_reduction=reduction)
    users, pos, neg = [1, 2, 1, 2], [1, 2, 1, 3], [3, 4, 4, 1]
    loss = model.calculate_loss(batch(users, pos, neg))
    assert loss.item() == pytest.approx(_hand_loss(model, env_weights, users, pos, neg, reduction), rel=1e-5)


@pytest.mark.parametrize(
    "switches",
    [
        dict(use_invariance=False),
        dict(use_alignment=False),
        dict(use_invariance=False, use_alignment=False),
    ],
)
def test_ablation_switches_drop_their_terms(switches):
    model, env_weights = _hand_made_model(**switches)
    users, pos, neg = [1, 2, 1, 2], [1, 2, 1, 3], [3, 4, 4, 1]
    expected = _hand_loss(model, env_weights, users, pos, neg, model.env_loss_reduction, **switches)
    assert model.calculate_loss(batch(users, pos, neg)).item() == pytest.approx(expected, rel=1e-5)


def test_both_modules_off_is_content_only_bpr():
    model, _ = _hand_made_model(use_invariance=False, use_alignment=False, reg_weight=0.0)
    interaction = batch([1, 2], [1, 3], [4, 2])
    model.eval()
    margin = model.predict(Interaction({USER: interaction[USER], ITEM: interaction[ITEM]})) - model.predict(
        Interaction({USER: interaction[USER], ITEM: interaction[NEG]})
    )
    model.train()
    expected = torch.nn.functional.softplus(-margin).mean()
    assert model.calculate_loss(interaction).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_without_the_equal_environment_uses_m_environments():
    model = make_model(include_equal_env=False)
    assert model.environments().shape == (3, 3)
    assert torch.isfinite(model.calculate_loss(batch(*TRAIN_BATCH)))


def test_loss_is_finite_when_no_positive_has_two_modalities():
    features = [torch.randn(4, 2), torch.randn(4, 3)]
    availability = [[False, False], [True, False], [False, True], [True, True]]
    model = make_model(make_dataset(features, availability))
    loss = model.calculate_loss(batch([1, 2], [1, 2], [3, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad.to_dense()).all() for p in model.parameters())


def test_gradients_reach_every_extractor_and_the_user_embedding():
    model = make_model()
    model.calculate_loss(batch(*TRAIN_BATCH)).backward()
    for extractor in model.extractors:
        assert extractor.weight.grad.abs().sum() > 0
        assert extractor.bias.grad.abs().sum() > 0
    grad = model.user_embedding.weight.grad.to_dense()
    batch_users = sorted(set(TRAIN_BATCH[0]))
    assert (grad[batch_users].abs().sum(dim=1) > 0).all()
    others = [u for u in range(grad.shape[0]) if u not in batch_users]
    assert grad[others].abs().sum() == 0


def test_sparse_user_gradients_hold_only_the_batch_users():
    dense, sparse = make_model(sparse_user_gradients=False), make_model(sparse_user_gradients=True)
    for model in (dense, sparse):
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
    grad = sparse.user_embedding.weight.grad
    assert grad.is_sparse and not dense.user_embedding.weight.grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == set(TRAIN_BATCH[0])
    assert torch.allclose(grad.to_dense(), dense.user_embedding.weight.grad)  # same gradient, other storage


@pytest.mark.parametrize("conflict", [{"learner": "sgd"}, {"weight_decay": 0.01}, {"clip_grad_norm": {"max_norm": 5}},
                                      {"enable_scaler": True}])
def test_sparse_user_gradients_reject_what_lazy_adam_cannot_do(conflict):
    config = dict(yaml.safe_load(MILK_YAML.read_text()), sparse_user_gradients=True, **conflict)
    with pytest.raises(ConfigError, match=f"sparse_user_gradients.*{next(iter(conflict))}"):
        validate_options(config, MILK)
    validate_options(dict(config, sparse_user_gradients=False), MILK)


@pytest.mark.parametrize("options, lazy", [({}, True), ({"weight_decay": 0.01}, False), ({"learner": "sgd"}, False),
                                           ({"sparse_user_gradients": False}, False)])
def test_auto_user_gradients_are_lazy_unless_an_option_needs_dense_ones(options, lazy):
    config = dict(yaml.safe_load(MILK_YAML.read_text()), **options)
    validate_options(config, MILK)  # auto never turns another option into an error
    model = make_model(**options)
    assert model.lazy_user_updates is lazy
    assert not model.user_embedding.sparse  # dense until a trainer asks: any torch optimiser can train it


def test_training_step_projects_only_the_batch_items(monkeypatch):
    model = make_model()
    seen = []
    original = model.extractors.forward
    monkeypatch.setattr(model.extractors, "forward", lambda rows: seen.append(rows[0].shape[0]) or original(rows))
    model.calculate_loss(batch(*TRAIN_BATCH))
    assert seen == [len(set(TRAIN_BATCH[1]) | set(TRAIN_BATCH[2]))]


# ----- inference --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["all", "available"])
def test_full_sort_predict_equals_predict_for_every_pair(fusion):
    model = make_model(fusion=fusion)
    model.eval()
    n_users, n_items = model.n_users, model.n_items
    users = torch.arange(n_users)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({USER: users})).view(n_users, n_items)
        pairs = Interaction(
            {USER: users.repeat_interleave(n_items), ITEM: torch.arange(n_items).repeat(n_users)}
        )
        single = model.predict(pairs).view(n_users, n_items)
    assert torch.allclose(full, single, atol=1e-6)


def test_encode_items_serves_raw_rows_with_missing_modalities_like_the_dataset():
    dataset = random_dataset()
    model = make_model(dataset)
    model.eval()
    items = torch.tensor([2, 5, 6, 7])
    availability = dataset.item_availability[items]
    raw = []
    for m, table in enumerate(dataset.item_features):
        rows = table[items].clone()
        rows[~availability[:, m]] = float("nan")  # a fresh upload has nothing for its missing modalities
        raw.append(rows)
    with torch.no_grad():
        served = model.encode_items(raw, availability)
    assert torch.allclose(served, model.item_representations()[items], atol=1e-6)
    assert torch.equal(model.user_embeddings(), model.user_embedding.weight)
    assert torch.equal(model.user_embeddings(torch.tensor([2])), model.user_embedding.weight[2:3])


def test_imputed_fusion_is_the_mean_of_all_extractor_outputs():
    model = make_model()
    with torch.no_grad():
        table = model.item_representations()
        outputs = [ext(rows) for ext, rows in zip(model.extractors, model._tables("item_feature"))]
    assert torch.allclose(table, torch.stack(outputs).mean(dim=0), atol=1e-6)


def test_available_fusion_averages_only_available_modalities():
    model = make_model(fusion="available")
    with torch.no_grad():
        table = model.item_representations()
        outputs = [ext(rows) for ext, rows in zip(model.extractors, model._tables("item_feature"))]
    # Item 6 has modality 0 only; item 2 misses modality 1; item 0 (PAD) has none and falls back to all.
    assert torch.allclose(table[6], outputs[0][6], atol=1e-6)
    assert torch.allclose(table[2], (outputs[0][2] + outputs[2][2]) / 2, atol=1e-6)
    assert torch.allclose(table[0], torch.stack([o[0] for o in outputs]).mean(dim=0), atol=1e-6)


def test_features_are_l2_normalised_only_when_switched_on():
    dataset = random_dataset()
    normalised = make_model(dataset)._tables("item_feature")
    raw = make_model(dataset, normalize_features=False)._tables("item_feature")
    for m, rows in enumerate(normalised):
        assert torch.allclose(rows.norm(dim=1), torch.ones(rows.shape[0]), atol=1e-5)
        assert torch.equal(raw[m], dataset.item_features[m])


def test_zero_feature_rows_stay_zero_after_normalisation():
    features = [torch.zeros(3, 2), torch.ones(3, 2)]
    model = make_model(make_dataset(features, torch.ones(3, 2, dtype=torch.bool)))
    rows = model._prepare(features, torch.ones(3, 2, dtype=torch.bool))
    assert torch.equal(rows[0], torch.zeros(3, 2))


def test_item_table_is_computed_once_per_evaluation_and_refreshed_after_changes(monkeypatch):
    model = make_model()
    calls = []
    original = model.extractors.forward
    monkeypatch.setattr(model.extractors, "forward", lambda rows: calls.append(1) or original(rows))
    users = Interaction({USER: torch.tensor([1, 2])})
    model.eval()
    with torch.no_grad():
        first = model.full_sort_predict(users)
        model.full_sort_predict(Interaction({USER: torch.tensor([3])}))
    assert len(calls) == 1

    model.train()
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(users)
    assert len(calls) == 2

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model.calculate_loss(batch(*TRAIN_BATCH)).backward()
    model.eval()
    with torch.no_grad():
        before_step = model.full_sort_predict(users)
    optimizer.step()  # no mode switch: the parameter versions must invalidate the table
    with torch.no_grad():
        after_step = model.full_sort_predict(users)
    assert not torch.allclose(before_step, after_step)

    model.load_state_dict(make_model().state_dict())
    with torch.no_grad():
        reloaded = model.full_sort_predict(users)
    assert torch.allclose(reloaded, first, atol=1e-6)


def test_feature_buffers_move_with_the_model_but_stay_out_of_checkpoints():
    model = make_model()
    keys = set(model.state_dict())
    assert keys == {"user_embedding.weight"} | {
        f"extractors.{m}.{p}" for m in range(3) for p in ("weight", "bias")
    }
    buffer_names = {name for name, _ in model.named_buffers()}
    assert {"item_availability", "item_feature_0", "imputation_value_2"} <= buffer_names
    model.to(torch.float64)
    assert model.item_feature_0.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    model = make_model(device=torch.device("cuda")).to("cuda")
    interaction = batch(*TRAIN_BATCH).to("cuda")
    model.calculate_loss(interaction).backward()
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({USER: torch.tensor([1, 2])}).to("cuda"))
    assert scores.is_cuda and torch.isfinite(scores).all()


def test_same_seed_same_run_gives_identical_outputs():
    def run():
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(4):
            optimizer.zero_grad()
            loss = model.calculate_loss(batch(*TRAIN_BATCH))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            return losses, model.full_sort_predict(Interaction({USER: torch.arange(6)}))

    (losses_a, scores_a), (losses_b, scores_b) = run(), run()
    assert losses_a == losses_b
    assert torch.equal(scores_a, scores_b)
    assert len(set(losses_a)) == len(losses_a)


# ----- options and construction -----------------------------------------------------------------------------------


def test_yaml_defaults_are_the_authors_milk_with_every_option_of_ours_off_but_lazy_adam():
    defaults = model_defaults(MILK)
    assert set(MILK.option_rules) <= set(defaults)
    validate_options(defaults, MILK)
    assert defaults["embedding_size"] == 64 and defaults["reg_weight"] == 1e-4
    assert defaults["invariance_weight"] == 50 and defaults["env_loss_reduction"] == "sum"
    assert (defaults["fusion"], defaults["missing_modality"], defaults["extractor_hidden_sizes"]) == ("all", "imputed", [])
    assert (defaults["modality_dropout"], defaults["score_calibration"]) == (0.0, "none")
    assert defaults["sparse_user_gradients"] == "auto"  # an optimiser detail: lazy Adam matched dense Adam (README)


@pytest.mark.parametrize(
    "key, value",
    [
        ("invariance_weight", -1.0),
        ("align_weight", float("nan")),
        ("reg_weight", -1e-4),
        ("dirichlet_alpha", 0.0),
        ("dirichlet_alpha", -0.5),
        ("embedding_size", 0),
        ("embedding_size", 6.5),
        ("env_loss_reduction", "median"),
        ("fusion", "zero"),
        ("use_alignment", "yes"),
        ("resample_envs", 1),
    ],
)
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    config = model_defaults(MILK)
    config[key] = value
    with pytest.raises(ConfigError, match=key):
        validate_options(config, MILK)


def test_missing_option_names_the_key():
    config = make_config()
    del config["align_weight"]
    with pytest.raises(ConfigError, match="align_weight"):
        MILK(config, random_dataset())


def test_fewer_than_two_modalities_is_a_clear_error():
    dataset = make_dataset([torch.randn(4, 3)], torch.ones(4, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 modalities"):
        MILK(make_config(), dataset)


def test_feature_rows_must_match_the_item_count():
    dataset = random_dataset()
    dataset.item_features[1] = dataset.item_features[1][:-1]
    with pytest.raises(ValueError, match="mod1"):
        MILK(make_config(), dataset)


def test_plugin_config_loads_milk_defaults(tmp_path):
    from recbole_milk.config import Config

    config = Config(model="MILK", dataset="tiny", config_dict={"data_path": str(tmp_path), "invariance_weight": 7.0,
                                                               "modalities": {"a": "a.npy", "b": "b.npy"}})
    assert config["model"] == "MILK"
    assert config["embedding_size"] == 64 and config["env_loss_reduction"] == "sum"
    assert config["invariance_weight"] == 7.0


def test_learned_fusion_weighs_available_modalities_by_trained_weights():
    model = make_model(fusion="learned", use_invariance=False)
    with torch.no_grad():
        model.fusion_logits.copy_(torch.tensor([2.0, 0.0, -1.0]))
        outputs = model.extractors(model._tables("item_feature"))
        table = model.item_representations()
    weights = torch.softmax(torch.tensor([2.0, 0.0, -1.0]), dim=0)
    assert torch.allclose(table[1], (outputs[1] * weights.unsqueeze(1)).sum(0), atol=1e-6)  # complete item
    kept = weights * torch.tensor([1.0, 0.0, 1.0])  # item 2 misses modality 1
    assert torch.allclose(table[2], (outputs[2] * (kept / kept.sum()).unsqueeze(1)).sum(0), atol=1e-6)
    model.train()
    model.calculate_loss(batch(*TRAIN_BATCH)).backward()
    assert model.fusion_logits.grad is not None and model.fusion_logits.grad.abs().sum() > 0


def test_learned_fusion_needs_the_environments_off():
    config = model_defaults(MILK)
    config.update(fusion="learned")
    with pytest.raises(ConfigError, match="fusion.*use_invariance"):
        validate_options(config, MILK)
    validate_options(dict(config, use_invariance=False), MILK)
