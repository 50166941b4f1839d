"""The pure quality metrics against closed forms and constructed cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import scipy.linalg
import torch

from diffusion_lab.quality import frechet, neighbours
from diffusion_lab.quality.frechet import GaussianStats, frechet_distance, gaussian_stats
from diffusion_lab.quality.kid import kernel_inception_distance, mmd2_unbiased
from diffusion_lab.quality.memorisation import nearest_training
from diffusion_lab.quality.neighbours import k_nearest, kth_neighbour_radius
from diffusion_lab.quality.precision_recall import precision_recall


def random_spd(dim: int, seed: int) -> torch.Tensor:
    """A random symmetric positive definite matrix (float64)."""
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_gaussian_stats_match_torch_cov_across_chunks(monkeypatch):
    x = torch.randn(1000, 5, generator=torch.Generator().manual_seed(0)) * 3 + 100
    monkeypatch.setattr(frechet, "CHUNK_ROWS", 37)
    stats = gaussian_stats(x)
    assert stats.count == 1000 and stats.mean.dtype == torch.float64
    torch.testing.assert_close(stats.mean, x.double().mean(0))
    torch.testing.assert_close(stats.cov, torch.cov(x.double().T))


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu_1, mu_2 = torch.tensor([0.0, 1.0, 2.0]).double(), torch.tensor([1.0, 1.0, 0.0]).double()
    var_1, var_2 = torch.tensor([1.0, 4.0, 9.0]).double(), torch.tensor([4.0, 1.0, 0.25]).double()
    a = GaussianStats(mu_1, torch.diag(var_1), 2)
    b = GaussianStats(mu_2, torch.diag(var_2), 2)
    # Commuting covariances: ||mu_1 - mu_2||^2 + sum (sqrt(v_1) - sqrt(v_2))^2.
    expected = 1 + 4 + (1 + 1 + 2.5**2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_full_covariances_matches_scipy_sqrtm():
    s_1, s_2 = random_spd(6, 1), random_spd(6, 2)
    mu_1, mu_2 = torch.zeros(6, dtype=torch.float64), torch.full((6,), 0.5, dtype=torch.float64)
    root = scipy.linalg.sqrtm(s_1.numpy() @ s_2.numpy()).real
    expected = 6 * 0.25 + float(s_1.trace() + s_2.trace()) - 2 * root.trace()
    got = frechet_distance(GaussianStats(mu_1, s_1, 2), GaussianStats(mu_2, s_2, 2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 64, generator=torch.Generator().manual_seed(3))
    stats = gaussian_stats(x)
    assert abs(frechet_distance(stats, stats)) < 1e-9 * float(stats.cov.trace())


@pytest.mark.parametrize(("n_a", "n_b"), [(20, 30), (30, 20), (12, 500), (40, 40)])
def test_frechet_distance_with_fewer_samples_than_dimensions_is_the_nuclear_norm_form(n_a, n_b):
    """Sets of n <= D rows keep their factor. With S = F^T F for the centred features
    F = (x - mean) / sqrt(n - 1), tr((S_a S_b)^(1/2)) is the sum of the singular values of
    F_a F_b^T. Both paths lose a little to the near-zero eigenvalues they clamp (centring
    leaves at least one), the D x D one more."""
    g = torch.Generator().manual_seed(n_a * 1000 + n_b)
    x = torch.randn(n_a, 40, generator=g) * 2 + 1
    y = torch.randn(n_b, 40, generator=g) @ torch.randn(40, 40, generator=g) / 6
    a, b = gaussian_stats(x), gaussian_stats(y)
    assert (a.factor is not None, b.factor is not None) == (n_a <= 40, n_b <= 40)
    torch.testing.assert_close(a.cov, torch.cov(x.double().T))

    def centred(z):
        z = z.double()
        return (z - z.mean(0)) / math.sqrt(len(z) - 1)

    f_a, f_b = centred(x), centred(y)
    expected = float(
        (a.mean - b.mean).square().sum()
        + f_a.square().sum()
        + f_b.square().sum()
        - 2 * torch.linalg.svdvals(f_a @ f_b.T).sum()
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    full = frechet_distance(replace(a, factor=None), replace(b, factor=None))
    assert full == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_of_a_small_set_with_itself_is_zero():
    stats = gaussian_stats(torch.randn(30, 64, generator=torch.Generator().manual_seed(8)))
    assert stats.factor is not None
    assert abs(frechet_distance(stats, stats)) < 1e-9 * float(stats.cov.trace())


def test_frechet_distance_of_samples_approaches_the_closed_form():
    """Large samples of two Gaussians: the estimate is within 3 % of the exact distance."""
    g = torch.Generator().manual_seed(4)
    s_1, s_2 = random_spd(4, 5), random_spd(4, 6)
    mu_2 = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    x = torch.randn(200_000, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s_1).T
    y = torch.randn(200_000, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s_2).T
    exact = frechet_distance(
        GaussianStats(torch.zeros(4, dtype=torch.float64), s_1, 2), GaussianStats(mu_2, s_2, 2)
    )
    estimate = frechet_distance(gaussian_stats(x), gaussian_stats(y + mu_2))
    assert estimate == pytest.approx(exact, rel=0.03)


def test_mmd2_unbiased_matches_its_definition_on_a_tiny_set():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) + 1

    def k(a, b):
        return (float(a.double() @ b.double()) / 3 + 1) ** 3

    m = 4
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_about_zero_for_two_draws_of_one_distribution():
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(2000, 16, generator=g), torch.randn(2000, 16, generator=g)
    same, same_std = kernel_inception_distance(x, y, subsets=50, subset_size=500)
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=50, subset_size=500)
    # Unbiased: the mean over subsets is within a few standard errors of 0.
    assert abs(same) < 4 * same_std / math.sqrt(50)
    assert shifted > 50 * abs(same) and shifted > 0


def test_kid_needs_two_vectors_per_set():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(torch.randn(1, 4), torch.randn(5, 4))


def test_k_nearest_in_chunks_matches_brute_force(monkeypatch):
    monkeypatch.setattr(neighbours, "CHUNK_ELEMENTS", 50)  # chunks of 1 query row
    g = torch.Generator().manual_seed(9)
    queries, reference = torch.randn(13, 8, generator=g), torch.randn(40, 8, generator=g)
    distances, indices = k_nearest(queries, reference, 3)
    full = torch.cdist(queries.double(), reference.double())
    expected, expected_indices = full.topk(3, dim=1, largest=False)
    torch.testing.assert_close(distances, expected)
    assert torch.equal(indices, expected_indices)


def test_kth_neighbour_radius_skips_the_vector_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert kth_neighbour_radius(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert kth_neighbour_radius(points, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_precision_and_recall_of_a_set_against_itself_are_one():
    x = torch.randn(300, 32, generator=torch.Generator().manual_seed(10))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_counts_the_samples_inside_the_real_manifold():
    """Generated: 30 real vectors and 10 far away; real: only 30 of its 60 vectors generated."""
    g = torch.Generator().manual_seed(11)
    real = torch.randn(60, 8, generator=g)
    generated = torch.cat([real[:30], torch.randn(10, 8, generator=g) + 100])
    precision, recall = precision_recall(real, generated, k=3)
    assert precision == pytest.approx(30 / 40)
    # The generated manifold's balls around the far 10 reach back to the real cluster.
    assert 30 / 60 <= recall <= 1.0


def test_precision_recall_needs_more_than_k_vectors():
    with pytest.raises(ValueError, match="more than 3 generated"):
        precision_recall(torch.randn(10, 4), torch.randn(3, 4), k=3)


def test_memorisation_check_finds_a_planted_duplicate():
    g = torch.Generator().manual_seed(12)
    training = torch.randn(500, 32, generator=g)
    generated = torch.randn(50, 32, generator=g)
    generated[17] = training[123]
    generated[30] = training[7] + 1e-3 * torch.randn(32, generator=g)  # a near copy
    nearest = nearest_training(generated, training)
    assert nearest.index[17] == 123 and nearest.distance[17] == 0
    assert nearest.index[30] == 7
    assert nearest.copies().nonzero().flatten().tolist() == [17, 30]
    assert nearest.share_copied() == pytest.approx(2 / 50)
    assert nearest.closest(2).tolist() == [17, 30]
