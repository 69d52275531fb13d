import pytest
import torch

from shared.methods import METHODS, SSLMethod, build_method
from shared.models import resnet18


def test_the_registry_names_the_four_methods():
    assert set(METHODS) == {"simclr", "vicreg", "byol", "mocov2"}
    assert all(issubclass(cls, SSLMethod) for cls in METHODS.values())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_owns_the_encoder_it_is_given_and_trains_it_first(name, tiny_method):
    method = tiny_method(name)
    encoder_params = list(method.encoder.parameters())
    trainable = method.trainable_parameters()
    assert trainable[:len(encoder_params)] == encoder_params  # the optimiser's order: encoder, then heads
    assert all(p.requires_grad for p in trainable)
    frozen = [p for p in method.parameters() if not p.requires_grad]
    assert {id(p) for p in trainable} | {id(p) for p in frozen} == {id(p) for p in method.parameters()}


def test_an_unknown_method_or_option_is_an_error_naming_the_allowed_ones():
    encoder = resnet18(width=1 / 16)
    with pytest.raises(ValueError, match="unknown SSL method 'barlow'; allowed: simclr, vicreg, byol, mocov2"):
        build_method("barlow", encoder)
    with pytest.raises(ValueError, match=r"simclr: unknown option 'temprature'; allowed: projection_dim, .*tempera"):
        build_method("simclr", encoder, temprature=0.5)


def test_a_method_needs_at_least_two_views(tiny_method):
    method = tiny_method("simclr")
    with pytest.raises(AssertionError, match="at least 2 views"):
        method([torch.rand(4, 3, 16, 16)])
