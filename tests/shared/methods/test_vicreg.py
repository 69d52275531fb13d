"""VICReg as a method: its loss and logs are shared.losses.vicreg of the expander outputs."""
import itertools

import torch

from shared.losses import vicreg


def views(n, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 16, 16, generator=g) for _ in range(n)]


def test_two_views_give_exactly_the_vicreg_loss_with_the_official_coefficients(tiny_method):
    method = tiny_method("vicreg", sim_coeff=10.0, std_coeff=20.0, cov_coeff=2.0)
    assert [m.out_features for m in method.projector if isinstance(m, torch.nn.Linear)] == [32, 32]
    v1, v2 = views(2)
    loss, logs = method([v1, v2])
    z1, z2 = method.projector(method.encoder(v1)), method.projector(method.encoder(v2))
    expected, parts = vicreg(z1, z2, sim_coeff=10.0, std_coeff=20.0, cov_coeff=2.0, return_parts=True)
    assert torch.equal(loss, expected)
    assert logs.keys() == {"repr", "std", "cov"}
    assert all(torch.equal(logs[k], parts[k].detach()) and not logs[k].requires_grad for k in logs)


def test_n_views_give_the_mean_over_pairs(tiny_method):
    method = tiny_method("vicreg")
    vs = views(3)
    z = [method.projector(method.encoder(v)) for v in vs]
    expected = sum(vicreg(a, b) for a, b in itertools.combinations(z, 2)) / 3
    torch.testing.assert_close(method(vs)[0], expected, rtol=1e-6, atol=0)


def test_gradients_reach_every_parameter(tiny_method):
    method = tiny_method("vicreg")
    method(views(2))[0].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
