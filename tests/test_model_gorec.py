"""GoRec: a content-conditioned CVAE over frozen pre-trained CF embeddings (Bai et al. 2023)."""
import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import (
    NEW,
    TRAIN_BATCH,
    WARM,
    all_scores,
    batch,
    check_option_is_rejected,
    make_dataset,
    make_small_model,
)

from recbole_milk.model.general_recommender.gorec import GoRec, kmeans, nearest
from recbole_milk.model.loss import gaussian_kl, uniformity


def model_with(**overrides):
    return make_small_model(GoRec, **overrides)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2) for c in centres])
    found = kmeans(points, 3, torch.Generator().manual_seed(1))
    assert torch.allclose(found[nearest(centres, found)], centres, atol=0.1)
    assert torch.equal(found, kmeans(points, 3, torch.Generator().manual_seed(1)))
    assert kmeans(points[:2], 5, torch.Generator().manual_seed(1)).shape == (2, 2)  # at most one cluster per point


def test_new_items_are_generated_from_their_content_clusters_mean_cf_embedding():
    model = model_with()
    model.eval()
    warm = torch.tensor(WARM)
    assignment = nearest(model.item_content(warm).concatenated(), model.cluster_centroids)
    for cluster in assignment.unique():
        members = warm[assignment == cluster]
        assert torch.allclose(model.cluster_cf_mean[cluster], model.item_cf[members].mean(0), atol=1e-6)
    with torch.no_grad():
        content = model.item_content(NEW).concatenated()
        preference = model.cluster_cf_mean[nearest(content, model.cluster_centroids)]
        mu, _ = model.posterior(content, preference)
        expected = model.decoder(torch.cat([content, mu], dim=1))
        items = model.item_representations()
    assert torch.allclose(items[NEW], expected, atol=1e-6)
    assert torch.allclose(items[WARM], model.item_cf[WARM])
    assert torch.allclose(all_scores(model)[:, NEW], model.user_cf[1:7] @ expected.t(), atol=1e-5)


def test_content_is_normalised_identically_in_training_and_serving():
    model = model_with()
    dataset = make_dataset()
    raw = [f[NEW] * 40.0 for f in dataset.item_features]  # a different scale: normalisation must remove it
    with torch.no_grad():
        served = model.encode_items(raw, dataset.item_availability[NEW])
        model.eval()
        evaluated = model.item_representations()[NEW]
    assert torch.allclose(served, evaluated, atol=1e-5)
    assert torch.allclose(model.item_content().concatenated().norm(dim=1)[1:], torch.full((12,), 2.0 ** 0.5), atol=1e-5)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p))
    expected = torch.distributions.kl_divergence(q, p)
    assert torch.allclose(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, logvar_q, mu_q, logvar_q), torch.zeros(4, 3), atol=1e-6)


def test_uniformity_is_the_log_mean_gaussian_potential_over_pairs():
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    expected = torch.pdist(F.normalize(x, dim=1)).pow(2).mul(-2).exp().mean().log()
    assert torch.allclose(uniformity(x), expected, atol=1e-5)
    spread = torch.eye(4)
    assert uniformity(spread) < uniformity(spread + 0.5)  # spread-out rows are more uniform (lower)
    assert uniformity(x[:1]).item() == 0.0


def test_loss_is_reconstruction_plus_weighted_kl_and_uniformity():
    model = model_with(content_dropout=0.0, kl_weight=0.7, uniformity_weight=0.2)
    _, pos, neg = TRAIN_BATCH
    items = torch.unique(torch.tensor(pos + neg))
    content, target = model.item_content(items).concatenated(), model.item_cf[items]
    mu, logvar = model.posterior(content, target)
    torch.manual_seed(5)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    expected = (F.mse_loss(model.decoder(torch.cat([content, z], 1)), target)
                + 0.7 * gaussian_kl(mu, logvar, model.prior_mu(content), model.prior_logvar(content)).mean()
                + 0.2 * uniformity(mu))
    torch.manual_seed(5)
    assert torch.allclose(model.calculate_loss(batch(*TRAIN_BATCH)), expected, atol=1e-5)


def test_uniformity_runs_on_a_random_sample_of_the_batchs_items(monkeypatch):
    import recbole_milk.model.general_recommender.gorec as gorec

    model = model_with()
    seen = []
    monkeypatch.setattr(gorec, "UNIFORMITY_SAMPLE", 3)
    monkeypatch.setattr(gorec, "uniformity", lambda x: seen.append(x.detach()) or uniformity(x))
    torch.manual_seed(0)
    for _ in range(10):
        model.calculate_loss(batch(*TRAIN_BATCH))
    assert all(x.shape[0] == 3 for x in seen)
    assert len({tuple(x[:, 0].tolist()) for x in seen}) > 1  # a different sample each time


def test_training_moves_generated_warm_items_towards_their_cf_embeddings():
    model = model_with(kl_weight=0.0, uniformity_weight=0.0, content_dropout=0.0)
    warm = torch.tensor(WARM)

    def error():
        with torch.no_grad():
            mu, _ = model.posterior(model.item_content(warm).concatenated(), model.item_cf[warm])
            return F.mse_loss(model.decoder(torch.cat([model.item_content(warm).concatenated(), mu], 1)), model.item_cf[warm]).item()

    before = error()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        model.calculate_loss(batch(*TRAIN_BATCH)).backward()
        optimizer.step()
    assert error() < 0.5 * before


@pytest.mark.parametrize("key, value", [("num_clusters", 0), ("content_dropout", 1.0), ("kl_weight", -1.0)])
def test_invalid_options_are_rejected_with_the_key_named(key, value):
    check_option_is_rejected(GoRec, key, value)


