"""NT-Xent and VICReg against naive references written from the formulas with Python loops."""
import math

import pytest
import torch

from shared.losses import nt_xent, vicreg


# ---------------------------------------------------------------- NT-Xent

def naive_nt_xent(z1, z2, tau):
    """L = 1/(2N) sum_i -log(exp(s_i,p(i)/tau) / sum_{k != i} exp(s_ik/tau)), p(i) = i +- N."""
    rows = z1.tolist() + z2.tolist()
    n2 = len(rows)
    n = n2 // 2

    def cos(u, v):
        dot = sum(a * b for a, b in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(cos(rows[i], rows[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(rows[i], rows[pos]) / tau) / denom)
    return total / n2


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_naive_loops(n, tau):
    g = torch.Generator().manual_seed(100 * n + int(10 * tau))
    z1 = torch.randn(n, 6, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, 6, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, temperature=tau)
    assert got.dtype == torch.float64 and got.ndim == 0
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-10)


def test_nt_xent_float32_and_scale_invariance():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 8, 16, generator=g)
    ref = naive_nt_xent(z1.double(), z2.double(), 0.5)
    assert nt_xent(z1, z2).item() == pytest.approx(ref, rel=1e-5)
    # Cosine similarity: rescaling any row changes nothing.
    assert nt_xent(3.0 * z1, 0.1 * z2).item() == pytest.approx(ref, rel=1e-5)


def test_nt_xent_aligned_views_score_lower_than_random():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(8, 32, generator=g)
    aligned = nt_xent(z1, z1.clone(), temperature=0.5)
    unrelated = nt_xent(z1, torch.randn(8, 32, generator=g), temperature=0.5)
    assert aligned < unrelated
    # Lower bound: the positive has similarity 1, at best every negative -1.
    n2 = 16
    bound = -math.log(math.exp(2.0) / (math.exp(2.0) + (n2 - 2) * math.exp(-2.0)))
    assert aligned.item() >= bound


def test_nt_xent_gradient_is_finite():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(4, 8, generator=g, requires_grad=True)
    z2 = torch.randn(4, 8, generator=g, requires_grad=True)
    nt_xent(z1, z2, temperature=0.1).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [nt_xent, vicreg])
def test_shape_assertions(loss):
    with pytest.raises(AssertionError, match="same shape"):
        loss(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(AssertionError, match=r"\(N, D\)"):
        loss(torch.randn(8), torch.randn(8))
    with pytest.raises(AssertionError, match="at least 2"):
        loss(torch.randn(1, 8), torch.randn(1, 8))


def test_nt_xent_rejects_bad_temperature():
    with pytest.raises(AssertionError, match="temperature"):
        nt_xent(torch.randn(4, 8), torch.randn(4, 8), temperature=0.0)


# ---------------------------------------------------------------- VICReg

def naive_vicreg_parts(z1, z2):
    """Per-dimension loops: MSE, hinge on sqrt(unbiased var + 1e-4), off-diagonal covariance sums."""
    a, b = z1.tolist(), z2.tolist()
    n, d = len(a), len(a[0])
    repr_ = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def std_term(x):
        hinge = 0.0
        for j in range(d):
            m = sum(x[i][j] for i in range(n)) / n
            var = sum((x[i][j] - m) ** 2 for i in range(n)) / (n - 1)
            hinge += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return hinge / d

    def cov_term(x):
        means = [sum(x[i][j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum((x[i][j] - means[j]) * (x[i][k] - means[k]) for i in range(n)) / (n - 1)
                    total += c * c
        return total / d

    return repr_, (std_term(a) + std_term(b)) / 2, cov_term(a) + cov_term(b)


@pytest.mark.parametrize("n, d", [(2, 3), (5, 4), (8, 6)])
def test_vicreg_parts_and_total_match_naive_loops(n, d):
    g = torch.Generator().manual_seed(10 * n + d)
    # Mixed scales so some dimensions sit below the std target of 1 and some above it.
    scale = torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 0.5
    r, s, c = naive_vicreg_parts(z1, z2)

    loss, parts = vicreg(z1, z2, sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5, return_parts=True)
    assert parts["repr"].item() == pytest.approx(r, rel=1e-10)
    assert parts["std"].item() == pytest.approx(s, rel=1e-10)
    assert parts["cov"].item() == pytest.approx(c, rel=1e-10)
    assert loss.item() == pytest.approx(2.0 * r + 3.0 * s + 0.5 * c, rel=1e-10)

    default = vicreg(z1, z2)  # official weights 25 / 25 / 1
    assert default.item() == pytest.approx(25.0 * r + 25.0 * s + 1.0 * c, rel=1e-10)


def test_vicreg_float32_and_gradient():
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, requires_grad=True)
    loss = vicreg(z1, z2)
    r, s, c = naive_vicreg_parts(z1.detach().double(), z2.detach().double())
    assert loss.item() == pytest.approx(25 * r + 25 * s + c, rel=1e-5)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_vicreg_collapsed_embeddings_hit_the_variance_term():
    z = torch.ones(6, 4)
    loss, parts = vicreg(z, z.clone(), return_parts=True)
    assert parts["repr"].item() == 0.0 and parts["cov"].item() == 0.0
    # std = sqrt(0 + 1e-4) = 0.01 in every dimension: hinge 0.99 per branch, halved twice.
    assert parts["std"].item() == pytest.approx(0.99, rel=1e-6)
    assert loss.item() == pytest.approx(25 * 0.99, rel=1e-6)


def test_vicreg_single_dimension_has_no_covariance():
    _, parts = vicreg(torch.randn(5, 1), torch.randn(5, 1), return_parts=True)
    assert parts["cov"].item() == 0.0
