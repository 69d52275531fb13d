"""SimCLR as a method: its loss is NT-Xent of the projections; heads built in the suite's RNG order."""
import itertools

import torch

from shared.losses import nt_xent
from shared.methods import build_method
from shared.models import resnet18, simclr_projector


def views(n, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 16, 16, generator=g) for _ in range(n)]


def test_two_views_give_exactly_nt_xent_of_the_projections(tiny_method):
    method = tiny_method("simclr", temperature=0.3)
    v1, v2 = views(2)
    loss, logs = method([v1, v2])
    z1, z2 = method.projector(method.encoder(v1)), method.projector(method.encoder(v2))
    assert torch.equal(loss, nt_xent(z1, z2, 0.3)) and logs == {}


def test_n_views_give_the_mean_over_pairs(tiny_method):
    method = tiny_method("simclr")
    vs = views(3)
    z = [method.projector(method.encoder(v)) for v in vs]
    expected = sum(nt_xent(a, b, 0.5) for a, b in itertools.combinations(z, 2)) / 3
    torch.testing.assert_close(method(vs)[0], expected, rtol=1e-6, atol=0)


def test_the_projector_is_made_after_the_encoder_as_the_callers_did():
    torch.manual_seed(0)
    encoder = resnet18(width=1 / 16)
    reference = simclr_projector(encoder.feature_dim, encoder.feature_dim, 8)
    torch.manual_seed(0)
    method = build_method("simclr", resnet18(width=1 / 16), projection_dim=8)
    for p, q in zip(method.projector.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [m.bias for m in method.projector if isinstance(m, torch.nn.Linear)] == [None, None]


def test_gradients_reach_every_parameter(tiny_method):
    method = tiny_method("simclr")
    method(views(2))[0].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
